"""The training loop: build, init or restore, iterate, finish.

This (with the rest of `jaxmeta.driver`, `jaxmeta.cli` and `benchmarks/`) is where
programs are jitted, the clock is read, and files are written. Every algorithm goes
through it by its `Algorithm(init, sample, update, evaluate)` contract.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta import host, parallel
from jaxmeta.algorithms.base import Algorithm, vmap_algorithm
from jaxmeta.driver import checkpoint as ckpt
from jaxmeta.driver import report, seeds
from jaxmeta.driver.distributed import is_primary, to_host
from jaxmeta.driver.run_folder import RunFolder
from jaxmeta.driver.settings import RunSettings
from jaxmeta.driver.signals import stop_on_signals


@dataclasses.dataclass
class RunResult:
    run_dir: Path | None
    state: Any
    metrics: list[dict]  # one dict per meta-iteration and seed ("iteration", "seed", metrics, "wall_s")
    table: report.Table  # final table (header, rows)
    curves: dict = dataclasses.field(default_factory=dict)  # "untrained"/"trained" AdaptationCurve


class NonFiniteError(FloatingPointError):
    """A loss, metric or updated state of the run is NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after a checkpoint; resume it with `resume=True`."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# --------------------------------------------------------------------------- building


def build_algorithm(settings: RunSettings, env: Any) -> tuple[Algorithm, Any]:
    """The algorithm of `settings` and its collector (None: the env's jitted rollouts)."""
    collector = None
    if settings.host:
        collector = host.make_collector(env, settings.simulator, max_envs=settings.config.envs_per_batch)
    return settings.spec.build(env, settings.config, collector), collector


def _nonfinite_leaf(tree) -> jax.Array:
    """Index (among floating leaves) of the first leaf holding a NaN/inf, or -1."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return jnp.asarray(-1, jnp.int32)
    bad = jnp.stack([~jnp.all(jnp.isfinite(x)) for x in leaves])
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)


def _float_leaf_paths(tree) -> list[str]:
    return [
        jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]


class Program:
    """The compiled functions of a run: init, step (one meta-iteration) and evaluate.

    With a jittable algorithm each is one XLA program (vmapped over seeds when there
    are several), replicated over `mesh`. With a host simulator, `sample` and
    `evaluate` run in Python and only `update` is jitted.
    """

    def __init__(self, algo: Algorithm, num_seeds: int, mesh):
        batched = num_seeds > 1
        A = vmap_algorithm(algo) if batched else algo
        fold = jax.vmap(jax.random.fold_in, in_axes=(0, None)) if batched else jax.random.fold_in
        rep = parallel.replicated(mesh)
        if algo.jittable:
            def step(state, k_train, it):
                state, metrics = A.train_step(state, fold(k_train, it))
                return state, metrics, _nonfinite_leaf(state)

            self.init = jax.jit(A.init, out_shardings=rep)
            self.step = jax.jit(step, out_shardings=rep)
            self.evaluate = jax.jit(A.evaluate, out_shardings=rep)
        else:
            def update(state, batch):
                state, metrics = A.update(state, batch)
                return state, metrics, _nonfinite_leaf(state)

            update = jax.jit(update)
            self.init = jax.jit(A.init)
            self.step = lambda state, k_train, it: update(state, A.sample(state, fold(k_train, it)))
            self.evaluate = A.evaluate


# --------------------------------------------------------------------------- the loop


def train(
    settings: RunSettings,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    mesh: Any = None,
    callback: Callable[[list[dict]], None] | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Train `settings` for `settings.num_batches` meta-iterations and write the results.

    Args:
      run_dir: the run folder (config.json, metrics.jsonl, returns.png,
        final_table.{txt,json}, checkpoints/). None: nothing is written or checkpointed.
      resume: continue the run in `run_dir` from its newest checkpoint. The result is
        bitwise that of an uninterrupted run: iteration `it` uses fold_in(k_train, it).
      mesh: a mesh with a "tasks" axis to shard task batches over (default: all devices).
      callback: called with the new metrics rows after each meta-iteration.
      handle_signals: turn Ctrl-C / SIGTERM into "checkpoint, then stop" (main thread).
    Raises:
      CheckpointError: resume from a missing, corrupt or mismatched checkpoint (nothing
        in the run folder is changed).
      NonFiniteError: a metric or the updated state went NaN/inf; the last good
        checkpoint is kept.
      TrainingInterrupted: stopped by a signal, after writing a checkpoint.
    """
    folder = RunFolder(run_dir, write=is_primary()) if run_dir is not None else None
    if resume and folder is None:
        raise ValueError("resume=True needs the run_dir of the run to continue")
    if resume and not folder.path.is_dir():
        raise ckpt.CheckpointError(f"no run to resume: {folder.path} is not a folder")
    if not resume and folder is not None and (folder.path / ckpt.CHECKPOINT_DIR).exists():
        raise ckpt.CheckpointError(f"{folder.path} already holds checkpoints: resume it or pick a new folder")

    env = settings.make_env()
    algo, collector = build_algorithm(settings, env)
    keys = seeds.run_keys(settings.seed, settings.num_seeds)
    mesh = parallel.task_mesh() if mesh is None else mesh
    program = Program(algo, settings.num_seeds, mesh)
    with parallel.use_mesh(mesh):
        state0 = program.init(keys.init)

    expect = settings.identity()
    state, start, history = state0, 0, []
    if resume:  # everything is checked before anything in the folder is written
        state, start, history = _restore(folder, settings, state0, keys, expect, mesh)
        log(f"resuming {folder.path} from meta-iteration {start}")

    checkpointer = None
    if folder is not None:
        folder.begin(_run_meta(settings), history)
        checkpointer = ckpt.Checkpointer(folder.path)

    def save(iteration: int, state) -> None:
        if checkpointer is not None:
            checkpointer.save(iteration, {"state": state, "k_train": keys.train}, {**expect, "metrics": history})

    untrained = None
    if settings.spec.final_table_for(settings.env) is None:
        with parallel.use_mesh(mesh):
            untrained = program.evaluate(state0, keys.eval)

    float_paths = _float_leaf_paths(state0)
    seed_list = list(range(settings.seed, settings.seed + settings.num_seeds))
    wall0 = history[-1]["wall_s"] if history else 0.0
    try:
        with stop_on_signals(handle_signals) as stop, _Progress(settings.num_batches, start, progress) as bar, \
                (folder.metrics_appender() if folder else _nothing()) as append, parallel.use_mesh(mesh):
            t0 = time.perf_counter() - wall0
            for it in range(start, settings.num_batches):
                new_state, metrics, bad_leaf = program.step(state, keys.train, np.int32(it))
                metrics, bad_leaf = to_host((metrics, bad_leaf))
                rows = _rows(it + 1, seed_list, metrics, time.perf_counter() - t0)
                _check_finite(rows, int(bad_leaf), float_paths, it + 1, checkpointer, folder)
                state = new_state
                history.extend(rows)
                append(rows)
                bar.update(rows)
                if callback is not None:
                    callback(rows)
                if settings.checkpoint_every and (it + 1) % settings.checkpoint_every == 0:
                    save(it + 1, state)
                if stop:
                    save(it + 1, state)
                    msg = f"stopped by {stop.name} after meta-iteration {it + 1}"
                    if folder is not None:
                        msg += f"; checkpoint saved, continue with: jaxmeta train --resume {folder.path}"
                    log(msg)
                    raise TrainingInterrupted(msg, stop.signum)
        save(settings.num_batches, state)
        if checkpointer is not None:
            checkpointer.close()
            checkpointer = None
        return _finish(settings, env, algo, collector, program, state, state0, untrained, keys, history, folder,
                       mesh, log)
    finally:
        if checkpointer is not None:
            checkpointer.close()
        if collector is not None:  # a host simulator's worker processes
            collector.close()


def _run_meta(settings: RunSettings) -> dict:
    return {
        **settings.to_json(),
        "seeds": list(range(settings.seed, settings.seed + settings.num_seeds)),
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
    }


def _restore(folder: RunFolder, settings: RunSettings, state0, keys, expect: dict, mesh):
    tree, meta = ckpt.restore(folder.path, {"state": state0, "k_train": keys.train}, expect,
                              sharding=parallel.replicated(mesh))
    if not np.array_equal(to_host(tree["k_train"]), keys.train):
        raise ckpt.CheckpointError(f"checkpoint in {folder.path} was made with other keys than seed {settings.seed} gives")
    start = int(meta["iteration"])
    if start > settings.num_batches:
        raise ckpt.CheckpointError(
            f"{folder.path} is already at meta-iteration {start}; ask for num_batches >= {start} to continue it"
        )
    return tree["state"], start, list(meta["metrics"])


def _rows(iteration: int, seed_list: list[int], metrics: dict, wall: float) -> list[dict]:
    S = len(seed_list)
    rows = []
    for i, s in enumerate(seed_list):
        row = {"iteration": iteration, "seed": s}
        row.update({k: float(np.reshape(v, (S,))[i]) for k, v in metrics.items()})
        row["wall_s"] = wall
        rows.append(row)
    return rows


def _check_finite(rows, bad_leaf: int, float_paths, iteration: int, checkpointer, folder) -> None:
    bad = [(r["seed"], k, v) for r in rows for k, v in r.items() if not np.isfinite(v)]
    if not bad and bad_leaf < 0:
        return
    what = f"metric {bad[0][1]!r} = {bad[0][2]} (seed {bad[0][0]})" if bad else f"updated state {float_paths[bad_leaf]}"
    kept = checkpointer.last_saved if checkpointer is not None else None
    where = (f"the last good checkpoint (meta-iteration {kept}) is kept in {folder.path / ckpt.CHECKPOINT_DIR}"
             if kept is not None else "no checkpoint was written before it")
    raise NonFiniteError(f"non-finite value at meta-iteration {iteration}: {what}; training stopped, {where}")


def _finish(settings, env, algo, collector, program, state, state0, untrained, keys, history, folder, mesh,
            log) -> RunResult:
    spec, S = settings.spec, settings.num_seeds
    final_table = spec.final_table_for(settings.env)
    batched = S > 1
    seed_list = list(range(settings.seed, settings.seed + S))
    pick = lambda tree, i: jax.tree.map(lambda x: x[i], tree) if batched else tree
    curves = {}
    with parallel.use_mesh(mesh):
        if final_table is None:
            trained = program.evaluate(state, keys.eval)
            untrained, trained = to_host((untrained, trained))
            curves = {"untrained": untrained, "trained": trained}
            per_seed = [report.adaptation_table(pick(untrained, i), pick(trained, i)) for i in range(S)]
            title = "adaptation on held-out tasks (mean return after k inner steps)"
        else:
            host_state, host_state0 = to_host((state, state0))
            per_seed = []
            for i in range(S):
                header, rows, *more = final_table(env, settings.config, algo, pick(host_state, i),
                                                  keys.eval[i] if batched else keys.eval, collector,
                                                  initial_state=pick(host_state0, i))
                per_seed.append((header, rows))
                if more and S == 1:  # curves to plot (one seed: host simulators train one at a time)
                    curves = to_host(more[0])
            title = "held-out tasks"
    header, rows = report.aggregate_tables(per_seed)
    if batched:
        title += f", mean over {S} seeds ({seed_list[0]}..{seed_list[-1]})"
    log(f"\n{title}\n{report.format_table(header, rows)}")
    if folder is not None:
        folder.finish(title, (header, rows), {str(s): t for s, t in zip(seed_list, per_seed)} if batched else None,
                      history, f"{spec.name} on {settings.env}", curves if final_table is not None else None)
        log(f"results in {folder.path}")
    return RunResult(folder.path if folder else None, state, history, (header, rows), curves)


class _Progress:
    """A tqdm bar over meta-iterations showing the latest returns (or nothing)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, desc="meta-training", unit="it", dynamic_ncols=True)
            except ImportError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def update(self, rows: list[dict]) -> None:
        if self.bar is not None:
            shown = [k for k in rows[0] if k.endswith(("_return", "_reward"))]
            self.bar.set_postfix({k: f"{np.mean([r[k] for r in rows]):.2f}" for k in shown})
            self.bar.update(1)


class _nothing:
    def __enter__(self):
        return lambda rows: None

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- entry points


def resume(run_dir: str | Path, *, num_batches: int | None = None, checkpoint_every: int | None = None,
           **kwargs) -> RunResult:
    """Continue the run in `run_dir` from its newest checkpoint (as `jaxmeta train --resume`).

    The settings come from the run's config.json; `num_batches` may extend the run and
    `checkpoint_every` change how often it checkpoints.
    """
    folder = RunFolder(run_dir)
    settings = _read_settings(folder, "resume")
    changes = {k: v for k, v in (("num_batches", num_batches), ("checkpoint_every", checkpoint_every)) if v is not None}
    return train(settings.replace(**changes), folder.path, resume=True, **kwargs)


def _read_settings(folder: RunFolder, what: str) -> RunSettings:
    try:
        return RunSettings.from_json(folder.read_config())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ckpt.CheckpointError(f"cannot {what} {folder.path}: no readable config.json of a run ({e})") from e


def evaluate(run_dir: str | Path, *, log: Callable[[str], None] = print, mesh: Any = None) -> RunResult:
    """The final table of the run in `run_dir` at its newest checkpoint, made as the end
    of training makes it (`jaxmeta evaluate`): the same keys, so a finished run's table
    is reproduced exactly; a stopped run is evaluated where it stopped.

    Writes RUN/evaluate-<iteration>/ (final table, plots) and returns the result.
    Raises CheckpointError when the run has no readable config or checkpoint.
    """
    folder = RunFolder(run_dir)
    settings = _read_settings(folder, "evaluate")
    env = settings.make_env()
    algo, collector = build_algorithm(settings, env)
    keys = seeds.run_keys(settings.seed, settings.num_seeds)
    mesh = parallel.task_mesh() if mesh is None else mesh
    program = Program(algo, settings.num_seeds, mesh)
    try:
        with parallel.use_mesh(mesh):
            state0 = program.init(keys.init)
        state, iteration, history = _restore(folder, settings, state0, keys, settings.identity(), mesh)
        log(f"evaluating {folder.path} at meta-iteration {iteration}")
        untrained = None
        if settings.spec.final_table_for(settings.env) is None:
            with parallel.use_mesh(mesh):
                untrained = program.evaluate(state0, keys.eval)
        out = RunFolder(folder.path / f"evaluate-{iteration}", write=is_primary())
        if out.write:
            out.path.mkdir(exist_ok=True)
        return _finish(settings, env, algo, collector, program, state, state0, untrained, keys, history, out, mesh,
                       log)
    finally:
        if collector is not None:
            collector.close()


def run(algorithm: str, env: str | None = None, config: Any = None, *, env_kwargs: dict | None = None,
        num_batches: int = 100, seed: int = 0, num_seeds: int = 1, checkpoint_every: int = 0,
        simulator: str | None = None, run_dir: str | Path | None = None, **kwargs) -> RunResult:
    """Train a registered algorithm by name, as `jaxmeta train` does (for notebooks).

    Further keyword arguments (progress, log, callback, ...) go to `train`.
    """
    settings = RunSettings(algorithm, env, dict(env_kwargs or {}), config, num_batches, seed, num_seeds,
                           checkpoint_every, simulator)
    return train(settings, run_dir, **kwargs)
