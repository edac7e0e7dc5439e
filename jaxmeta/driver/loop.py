"""The training loop: build, init or restore, iterate, finish.

This (with the rest of `jaxmeta.driver`, `jaxmeta.cli` and `benchmarks/`) is where
programs are jitted, the clock is read, and files are written. Every algorithm goes
through it by its `Algorithm(init, sample, update, evaluate)` contract.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta import host, parallel
from jaxmeta.algorithms.base import Algorithm, map_algorithm, vmap_algorithm
from jaxmeta.driver import checkpoint as ckpt
from jaxmeta.driver import report, seeds
from jaxmeta.driver.distributed import is_primary, to_host
from jaxmeta.driver.loggers import Loggers, TensorBoardLogger, WandbLogger
from jaxmeta.config import ConfigError
from jaxmeta.driver.run_folder import RunFolder, RunFolderError, describe_os_error
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

    def __init__(self, algo: Algorithm, num_seeds: int, mesh, seed_layout: str = "vmap"):
        batched = num_seeds > 1
        if seed_layout not in ("vmap", "map"):
            raise ValueError(f"seed_layout must be 'vmap' or 'map', got {seed_layout!r}")
        self.A = A = (vmap_algorithm(algo) if seed_layout == "vmap" else map_algorithm(algo)) if batched else algo
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
    tensorboard: bool = True,
    wandb_project: str | None = None,
) -> RunResult:
    """Train `settings` for `settings.num_batches` meta-iterations and write the results.

    Args:
      run_dir: the run folder (config.json, metrics.jsonl, returns.png,
        final_table.{txt,json}, checkpoints/). None: nothing is written or checkpointed.
        The process owns the folder while it runs: a second process is refused.
      resume: continue the run in `run_dir` from its newest checkpoint that restores
        (from scratch if it has none yet). The result is bitwise that of an
        uninterrupted run: iteration `it` uses fold_in(k_train, it). Nothing in the folder
        changes until the first new meta-iteration has run.
      mesh: a mesh with a "tasks" axis to shard task batches over (default: all devices).
      callback: called with the new metrics rows after each meta-iteration.
      handle_signals: turn Ctrl-C / SIGTERM into "checkpoint, then stop" (main thread),
        from start-up on.
      tensorboard: also write TensorBoard event files to RUN/tensorboard/.
      wandb_project: also log to this Weights & Biases project (the `wandb` extra).
    Raises:
      CheckpointError: resume from a missing or mismatched checkpoint, or one that
        cannot be written (nothing in the run folder is changed or lost).
      RunFolderError: the folder is taken by another process, not writable, full, or
        already holds a run.
      ConfigError: the sizes need more memory than the machine has (before compiling).
      NonFiniteError: a metric or the updated state went NaN/inf; the last good
        checkpoint is kept.
      TrainingInterrupted: stopped by a signal, after writing a checkpoint.
    """
    folder = _open_folder(run_dir, resume)
    fresh_and_empty = folder is not None and folder.write and not resume and not any(folder.path.iterdir())
    try:
        with stop_on_signals(handle_signals) as stop, (folder.own() if folder and folder.write else _nothing()):
            try:
                loggers = _LoggerSpec(tensorboard, wandb_project)
                return _train(settings, folder, resume, stop, progress, log, mesh, callback, loggers)
            except KeyboardInterrupt as e:
                if isinstance(e, TrainingInterrupted):
                    raise
                where = f"; continue with: jaxmeta train --resume {folder.path}" if folder is not None else ""
                kept = ckpt.latest_iteration(folder.path) if folder is not None else None
                msg = (f"stopped at once by a second {stop.name or 'SIGINT'}; "
                       + (f"the checkpoint of meta-iteration {kept} is kept" if kept is not None
                          else "no checkpoint yet") + where)
                log(msg)
                raise TrainingInterrupted(msg, stop.signum or signal.SIGINT) from None
    except BaseException:
        # a fresh run refused before it wrote anything (sizes, memory) leaves no folder behind
        if fresh_and_empty and folder.path.is_dir() and not any(folder.path.iterdir()):
            folder.path.rmdir()
        raise


def _open_folder(run_dir, resume: bool) -> RunFolder | None:
    if run_dir is None:
        if resume:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        return None
    folder = RunFolder(run_dir, write=is_primary())
    if resume:
        if not folder.path.is_dir():
            raise ckpt.CheckpointError(f"no run to resume: {folder.path} is not a folder")
    elif folder.write and folder.has_run():  # (the other processes of a multi-process run share it)
        raise RunFolderError(f"{folder.path} already holds a run: resume it (jaxmeta train --resume {folder.path}) "
                             "or pick a new folder")
    elif folder.write:
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"cannot create the run folder {folder.path}: {describe_os_error(e)}") from e
    return folder


class _LoggerSpec(NamedTuple):
    tensorboard: bool
    wandb_project: str | None

    def make(self, folder: RunFolder, settings: RunSettings) -> Loggers:
        found = []
        if folder is not None and folder.write:
            if self.tensorboard:
                found.append(TensorBoardLogger(folder.path, settings.num_seeds))
            if self.wandb_project:
                found.append(WandbLogger(folder.path, self.wandb_project, settings.to_json()))
        return Loggers(found)


def _train(settings, folder, resume, stop, progress, log, mesh, callback, logger_spec) -> RunResult:
    if folder is not None and folder.write:
        folder.check_writable()
    env = settings.make_env()
    algo, collector = build_algorithm(settings, env)
    keys = seeds.run_keys(settings.seed, settings.num_seeds)
    mesh = parallel.task_mesh() if mesh is None else mesh
    program = Program(algo, settings.num_seeds, mesh, settings.resolved_seed_layout())
    if algo.jittable:
        check_memory(program.A, keys)
    with parallel.use_mesh(mesh):
        state0 = program.init(keys.init)

    expect = settings.identity()
    state, start, history, broken = state0, 0, [], []
    if resume:  # everything is checked before anything in the folder is written
        if ckpt.steps(folder.path):
            restored = ckpt.restore(folder.path, {"state": state0, "k_train": keys.train}, expect,
                                    sharding=parallel.replicated(mesh), defaults=settings.identity_defaults())
            state, start, history = _check_restored(restored, folder, settings, keys)
            for it, why in restored.skipped:
                log(f"checkpoint {it} of {folder.path} is {why}; it will be kept in "
                    f"{folder.path / ckpt.CORRUPT_DIR}, resuming from checkpoint {restored.iteration}")
            broken = [it for it, _ in restored.skipped]
            log(f"resuming {folder.path} from meta-iteration {start}")
        else:
            log(f"{folder.path} has no checkpoint yet: starting it from meta-iteration 0")

    pending = folder is not None  # the folder is written once the run really continues
    if pending and folder.write and not resume:
        folder.begin(_run_meta(settings), history)  # a fresh run is resumable from its start on
    checkpointer, loggers = None, Loggers([])

    def save(iteration: int, state) -> None:
        if checkpointer is not None:
            with stop.protect():
                checkpointer.save(iteration, {"state": state, "k_train": keys.train}, {**expect, "metrics": history})

    untrained = None
    if settings.spec.final_table_for(settings.env) is None:
        with parallel.use_mesh(mesh):
            untrained = program.evaluate(state0, keys.eval)
    if stop:
        _interrupted(stop, start, folder, log, start_up=True)

    float_paths = _float_leaf_paths(state0)
    seed_list = list(range(settings.seed, settings.seed + settings.num_seeds))
    wall0 = history[-1]["wall_s"] if history else 0.0
    try:
        with _Progress(settings.num_batches, start, progress, settings.spec.score) as bar, parallel.use_mesh(mesh):
            t0 = time.perf_counter() - wall0
            for it in range(start, settings.num_batches):
                new_state, metrics, bad_leaf = program.step(state, keys.train, np.int32(it))
                metrics, bad_leaf = to_host((metrics, bad_leaf))
                rows = _rows(it + 1, seed_list, metrics, time.perf_counter() - t0)
                _check_finite(rows, int(bad_leaf), float_paths, it + 1, checkpointer, folder)
                if pending:  # the first new meta-iteration ran: now the folder changes
                    if folder.write:
                        with stop.protect():
                            ckpt.remove_temporary(folder.path)
                            ckpt.set_aside(folder.path, broken)
                            if resume:
                                folder.begin(_run_meta(settings), history)
                    # every process of a multi-process run takes part in an orbax save
                    checkpointer = ckpt.Checkpointer(folder.path, primary=folder.write)
                    loggers = logger_spec.make(folder, settings)
                    pending = False
                state = new_state
                history.extend(rows)
                if folder is not None:
                    folder.append_metrics(rows)
                loggers.rows(rows)
                bar.update(rows)
                if callback is not None:
                    callback(rows)
                if settings.checkpoint_every and (it + 1) % settings.checkpoint_every == 0:
                    save(it + 1, state)
                if stop:
                    save(it + 1, state)
                    _interrupted(stop, it + 1, folder, log)
        save(settings.num_batches, state)  # (nothing to save when a resumed run was already finished)
        if checkpointer is not None:
            checkpointer.close()
            checkpointer = None
        return _finish(settings, env, algo, collector, program, state, state0, untrained, keys, history, folder,
                       mesh, log, loggers)
    finally:
        if checkpointer is not None:
            checkpointer.close()
        loggers.close()
        if collector is not None:  # a host simulator's worker processes
            collector.close()


def _interrupted(stop, iteration: int, folder, log, start_up: bool = False) -> None:
    when = f"during start-up, before meta-iteration {iteration + 1}" if start_up else \
        f"after meta-iteration {iteration}"
    msg = f"stopped by {stop.name} {when}"
    if folder is not None:
        saved = "" if start_up else "checkpoint saved, "
        msg += f"; {saved}continue with: jaxmeta train --resume {folder.path}"
    log(msg)
    raise TrainingInterrupted(msg, stop.signum)


def check_memory(algo: Algorithm, keys) -> None:
    """Refuse sizes whose training state and one batch of experience alone need more
    memory than the device has, before anything is compiled (shapes only, `eval_shape`)."""
    state = jax.eval_shape(algo.init, keys.init)
    batch = jax.eval_shape(algo.sample, state, keys.train)
    nbytes = lambda tree: sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
    need = 3 * nbytes(state) + nbytes(batch)  # state, its update and its gradient, and the batch
    have = device_memory_bytes()
    if have and need > have:
        raise ConfigError(
            f"one meta-iteration needs at least {need / 2**30:.3g} GiB (a training state of "
            f"{nbytes(state) / 2**30:.3g} GiB, a batch of experience of {nbytes(batch) / 2**30:.3g} GiB), more than "
            f"the {have / 2**30:.3g} GiB of memory of {jax.local_devices()[0].device_kind}: lower the batch sizes "
            "(tasks, episodes or trials per batch, horizon)")


def device_memory_bytes() -> int | None:
    """Memory of this process's first device: its allocator's limit, or the host's RAM for a CPU."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _check_restored(restored: ckpt.Restored, folder: RunFolder, settings: RunSettings, keys):
    tree = restored.tree
    if not np.array_equal(to_host(tree["k_train"]), keys.train):
        raise ckpt.CheckpointError(f"checkpoint in {folder.path} was made with other keys than seed {settings.seed} gives")
    start = restored.iteration
    if start > settings.num_batches:
        raise ckpt.CheckpointError(
            f"{folder.path} is already at meta-iteration {start}; ask for num_batches >= {start} to continue it"
        )
    return tree["state"], start, list(restored.meta["metrics"])


def _run_meta(settings: RunSettings) -> dict:
    return {
        **settings.to_json(),
        "seeds": list(range(settings.seed, settings.seed + settings.num_seeds)),
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
        "device_count": jax.device_count(),
        "seed_layout_used": settings.resolved_seed_layout(),
        "process_count": jax.process_count(),
    }


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


class Results(NamedTuple):
    """The final table of a run (aggregated over seeds), per-seed tables and curves."""

    title: str
    table: report.Table
    per_seed: dict[str, report.Table] | None  # seed -> table, with several seeds
    curves: dict  # name -> AdaptationCurve (leaves [S, ...] with several seeds)


def final_results(settings: RunSettings, env, algo, collector, evaluate, state, state0, untrained, keys_eval,
                  mesh) -> Results:
    """The table a run ends with: the adaptation curve on the held-out tasks before
    (`untrained`) and after training, or the algorithm's own final table (black-box
    learners: the agent beside the classic baselines). `evaluate(state, key)` is the
    (compiled) evaluation; with several seeds states and keys have a leading seed axis.
    `state0` is the untrained state, which a final table may evaluate beside the trained one."""
    spec, S = settings.spec, settings.num_seeds
    final_table = spec.final_table_for(settings.env)
    batched = S > 1
    seed_list = list(range(settings.seed, settings.seed + S))
    pick = lambda tree, i: jax.tree.map(lambda x: x[i], tree) if batched else tree
    with parallel.use_mesh(mesh):
        if final_table is None:
            trained = evaluate(state, keys_eval)
            untrained, trained = to_host((untrained, trained))
            curves = {"untrained": untrained, "trained": trained}
            per_seed = [report.adaptation_table(pick(untrained, i), pick(trained, i)) for i in range(S)]
            title = "adaptation on held-out tasks (mean return after k inner steps)"
        else:
            host_state, host_state0 = to_host((state, state0))
            tables = [final_table(env, settings.config, algo, pick(host_state, i), keys_eval[i] if batched else keys_eval,
                                  collector, initial_state=pick(host_state0, i)) for i in range(S)]
            per_seed = [t[:2] for t in tables]
            curves = {}
            if all(len(t) > 2 for t in tables):  # (header, rows, curves): the curves by method
                curves = {k: jax.tree.map(lambda *xs: np.stack(xs), *[t[2][k] for t in tables]) if batched
                          else tables[0][2][k] for k in tables[0][2]}
            title = "held-out tasks"
    header, rows = report.aggregate_tables(per_seed)
    if batched:
        title += f", mean over {S} seeds ({seed_list[0]}..{seed_list[-1]})"
    return Results(title, (header, rows), {str(s): t for s, t in zip(seed_list, per_seed)} if batched else None,
                   curves)


def _finish(settings, env, algo, collector, program, state, state0, untrained, keys, history, folder, mesh, log,
            loggers) -> RunResult:
    res = final_results(settings, env, algo, collector, program.evaluate, state, state0, untrained, keys.eval, mesh)
    log(f"\n{res.title}\n{report.format_table(*res.table)}")
    if folder is not None:
        own_table = settings.spec.final_table_for(settings.env) is not None
        folder.finish(res.title, res.table, res.per_seed, history, f"{settings.spec.name} on {settings.env}",
                      res.curves if own_table else None, score=settings.spec.score)
        loggers.finish(res.curves, folder.path / "returns.png", res.table)
        log(f"results in {folder.path}")
    return RunResult(folder.path if folder else None, state, history, res.table, res.curves)


class _Progress:
    """A tqdm bar over meta-iterations showing the latest returns, or `score` (or nothing)."""

    def __init__(self, total: int, initial: int, enabled: bool, score: str = "return"):
        self.bar, self.suffixes = None, report.score_suffixes(score)
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
            shown = [k for k in rows[0] if k.endswith(self.suffixes)]
            self.bar.set_postfix({k: f"{np.mean([r[k] for r in rows]):.2f}" for k in shown})
            self.bar.update(1)


class _nothing:
    def __enter__(self):
        return None

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
    settings = read_settings(folder)
    changes = {k: v for k, v in (("num_batches", num_batches), ("checkpoint_every", checkpoint_every)) if v is not None}
    return train(settings.replace(**changes), folder.path, resume=True, **kwargs)


def read_settings(folder: RunFolder, what: str = "resume") -> RunSettings:
    """The settings in a run's config.json; a missing, unreadable or hand-broken file is
    a RunFolderError naming the file and the field."""
    path = folder.path / "config.json"
    if not folder.path.is_dir():
        raise RunFolderError(f"no run to {what}: {folder.path} is not a folder")
    try:
        saved = folder.read_config()
    except FileNotFoundError:
        raise RunFolderError(f"cannot {what} {folder.path}: it has no config.json (is it a run folder?)") from None
    except (OSError, ValueError) as e:
        raise RunFolderError(f"cannot {what} {folder.path}: {path} is not readable JSON ({e})") from None
    if not isinstance(saved, dict):
        raise RunFolderError(f"cannot {what} {folder.path}: {path} does not hold a JSON object")
    try:
        return RunSettings.from_json(saved)
    except KeyError as e:
        raise RunFolderError(f"cannot {what} {folder.path}: {path} has no {e.args[0]!r} field") from None
    except (ConfigError, TypeError, ValueError) as e:
        field = getattr(e, "field", None)
        where = f" (field {field!r})" if field else ""
        raise RunFolderError(f"cannot {what} {folder.path}: {path}{where}: {e}") from None


def run(algorithm: str, env: str | None = None, config: Any = None, *, env_kwargs: dict | None = None,
        num_batches: int = 100, seed: int = 0, num_seeds: int = 1, checkpoint_every: int = 0,
        simulator: str | None = None, run_dir: str | Path | None = None, **kwargs) -> RunResult:
    """Train a registered algorithm by name, as `jaxmeta train` does (for notebooks).

    Further keyword arguments (progress, log, callback, ...) go to `train`.
    """
    settings = RunSettings(algorithm, env, dict(env_kwargs or {}), config, num_batches, seed, num_seeds,
                           checkpoint_every, simulator)
    return train(settings, run_dir, **kwargs)
