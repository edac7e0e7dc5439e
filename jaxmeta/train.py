"""The training driver: the loop, progress, metrics, plots and the results folder.

This is the one place (with `cli.py` and `benchmarks/`) that jits, reads the clock,
prints and writes files. Every algorithm goes through it by its `Algorithm` contract.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.algorithms.registry import AlgorithmSpec


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    state: Any
    metrics: list[dict]  # one dict per meta-iteration and seed ("iteration", "seed", metrics, "wall_s")
    table: tuple[list[str], list[list[Any]]]  # final table (header, rows)
    curves: dict = dataclasses.field(default_factory=dict)  # "untrained"/"trained" AdaptationCurve


def _to_jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.generic, jax.Array)):
        return np.asarray(value).tolist()
    return value


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table with right-aligned numbers."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda xs: "  ".join(x.rjust(w) for x, w in zip(xs, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


def adaptation_table(untrained, trained) -> tuple[list[str], list[list[Any]]]:
    """Rows: inner steps 0..K; columns: mean (and std over tasks) before and after training."""
    header = ["adaptation steps", "untrained return", "trained return", "trained std"]
    rows = []
    for k in range(trained.returns.shape[0]):
        rows.append([
            k,
            float(untrained.returns[k]),
            float(trained.returns[k]),
            float(np.std(np.asarray(trained.per_task[:, k]))),
        ])
    return header, rows


def plot_adaptation(curves: dict, path: str | os.PathLike | None = None, ax=None):
    """Plot mean return against adaptation steps per curve.

    The band is the spread over tasks, or over seeds when the curves carry a leading
    seed axis (returns [S, K+1], as `train(..., num_seeds=S)` returns them).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, curve in curves.items():
        returns = np.asarray(curve.returns)
        if returns.ndim == 2:  # [S, K+1]: mean and std over seeds
            mean, std = returns.mean(axis=0), returns.std(axis=0)
            label = f"{label} ({returns.shape[0]} seeds)"
        else:
            mean, std = returns, np.std(np.asarray(curve.per_task), axis=0)
        k = np.arange(mean.shape[0])
        ax.plot(k, mean, marker="o", label=label)
        ax.fill_between(k, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean return on held-out tasks")
    ax.set_xticks(range(max(np.asarray(c.returns).shape[-1] for c in curves.values())))
    ax.grid(alpha=0.3)
    ax.legend()
    if own and path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=100)
        plt.close(ax.figure)
    return ax


def plot_returns(metrics: list[dict], path: Path, title: str) -> bool:
    """Plot every `*_return` metric over meta-iterations into a PNG; False if no matplotlib.

    With several seeds (rows with a "seed" field) the line is the mean over seeds and
    the band their standard deviation.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional
        return False
    keys = sorted({k for m in metrics for k in m if k.endswith(("_return", "_reward"))})
    num_seeds = len({m.get("seed", 0) for m in metrics}) or 1
    fig, ax = plt.subplots(figsize=(6, 4))
    its = sorted({m["iteration"] for m in metrics})
    for k in keys:
        by_it = {it: [] for it in its}
        for m in metrics:
            by_it[m["iteration"]].append(m.get(k, np.nan))
        mean = np.array([np.mean(by_it[it]) for it in its])
        label = k.replace("_", " ")
        if num_seeds > 1:
            std = np.array([np.std(by_it[it]) for it in its])
            ax.fill_between(its, mean - std, mean + std, alpha=0.2)
            label += f" (mean ± std, {num_seeds} seeds)"
        ax.plot(its, mean, label=label)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def aggregate_tables(tables: list[tuple[list[str], list[list[Any]]]]) -> tuple[list[str], list[list[Any]]]:
    """One table from per-seed tables of the same shape: the mean over seeds in every
    numeric column (the first column is the row label) and, after them, the standard
    deviation over seeds of each numeric column."""
    header, rows0 = tables[0]
    if len(tables) == 1:
        return header, rows0
    numeric = [j for j in range(1, len(header)) if all(isinstance(r[j], (int, float)) for r in rows0)]
    out_header = list(header) + [f"{header[j]} (std over {len(tables)} seeds)" for j in numeric]
    rows = []
    for i, row in enumerate(rows0):
        vals = {j: np.array([float(t[1][i][j]) for t in tables]) for j in numeric}
        new = [float(vals[j].mean()) if j in vals else row[j] for j in range(len(row))]
        rows.append(new + [float(vals[j].std()) for j in numeric])
    return out_header, rows


def _progress(total: int, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="meta-training", unit="it", dynamic_ncols=True)


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """root/name, or root/name-2, -3, ... if taken: an existing run is never overwritten."""
    root = Path(root)
    path, i = root / name, 1
    while path.exists():
        i += 1
        path = root / f"{name}-{i}"
    path.mkdir(parents=True)
    return path


class NonFiniteError(FloatingPointError):
    """A loss, metric or updated state of the run is NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after a checkpoint; resume it with `resume=True`."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def _canonical(value):
    """The JSON form of a value (tuples as lists), for comparing with saved metadata."""
    return json.loads(json.dumps(_to_jsonable(value)))


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


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train(
    spec: AlgorithmSpec,
    env: Any,
    config: Any,
    *,
    num_batches: int,
    seed: int = 0,
    num_seeds: int = 1,
    run_dir: str | os.PathLike | None = None,
    env_name: str = "",
    env_kwargs: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    checkpoint_every: int = 0,
    resume: bool = False,
    mesh: Any = None,
    callback: Callable[[list[dict]], None] | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Train `spec` on `env` for `num_batches` meta-iterations and write the results.

    Args:
      num_seeds: train seeds seed, seed+1, ..., seed+num_seeds-1 at once, `jax.vmap`ped
        over the whole training state; seed i gives what a single run with seed+i gives.
      run_dir: the run folder: config.json, metrics.jsonl (one line per meta-iteration
        and seed, with a "seed" field), returns.png, final_table.{txt,json} and
        checkpoints/ (orbax). None: nothing is written and nothing is checkpointed.
      checkpoint_every: also checkpoint every this many meta-iterations (0: only at the
        end and when stopped by Ctrl-C / SIGTERM).
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
    from jaxmeta import checkpoint as ckpt
    from jaxmeta import parallel

    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be an integer >= 1, got {num_batches!r}")
    if not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds must be an integer >= 1, got {num_seeds!r}")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
    out = Path(run_dir) if run_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs the run_dir of the run to continue")
    if resume and not out.is_dir():
        raise ckpt.CheckpointError(f"no run to resume: {out} is not a folder")
    if not resume and out is not None and (out / ckpt.CHECKPOINT_DIR).exists():
        raise ckpt.CheckpointError(f"{out} already holds checkpoints: resume it or pick a new folder")

    algo = spec.build(env, config)
    S, batched = num_seeds, num_seeds > 1
    seeds = list(range(seed, seed + S))
    if batched:
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(parallel.seed_keys(seed, S))  # [S, 3, 2]
        k_init, k_train, k_eval = keys[:, 0], keys[:, 1], keys[:, 2]
    else:
        k_init, k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
    k_init, k_train, k_eval = (np.asarray(k) for k in (k_init, k_train, k_eval))
    A = parallel.vmap_algorithm(algo) if batched else algo
    mesh = parallel.task_mesh() if mesh is None else mesh
    rep = parallel.replicated(mesh)
    primary = jax.process_index() == 0

    def step_fn(state, k_train, it):
        fold = jax.vmap(jax.random.fold_in, in_axes=(0, None)) if batched else jax.random.fold_in
        state, metrics = A.train_step(state, fold(k_train, it))
        return state, metrics, _nonfinite_leaf(state)

    if spec.jittable:
        jit = lambda f: jax.jit(f, out_shardings=rep)
    elif batched:
        raise ValueError(f"{spec.name} steps a simulator outside jit: it trains one seed at a time")
    else:
        jit = lambda f: f
    with parallel.use_mesh(mesh):
        init = jit(A.init)
        step = jit(step_fn)
        evaluate = jit(A.evaluate)
        state0 = init(k_init)
    float_paths = _float_leaf_paths(state0)

    expect = {
        "algorithm": spec.name,
        "env": env_name,
        "env_kwargs": _canonical(env_kwargs or {}),
        "config": _canonical(config),
        "seed": seed,
        "num_seeds": S,
    }
    metrics_log: list[dict] = []
    start, wall0 = 0, 0.0
    state = state0
    if resume:  # check everything before anything in the folder is written
        tree, meta = ckpt.restore(out, {"state": state0, "k_train": k_train}, expect, sharding=rep)
        if not np.array_equal(parallel.to_host(tree["k_train"]), k_train):
            raise ckpt.CheckpointError(f"checkpoint in {out} was made with other keys than seed {seed} gives")
        state, start = tree["state"], int(meta["iteration"])
        if start > num_batches:
            raise ckpt.CheckpointError(
                f"{out} is already at meta-iteration {start}; ask for num_batches >= {start} to continue it"
            )
        metrics_log = list(meta["metrics"])
        wall0 = metrics_log[-1]["wall_s"] if metrics_log else 0.0
        log(f"resuming {out} from meta-iteration {start}")

    run_meta = {
        **expect,
        "env_kwargs": _to_jsonable(env_kwargs or {}),
        "config": _to_jsonable(config),
        "seeds": seeds,
        "num_batches": num_batches,
        "checkpoint_every": checkpoint_every,
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
    }
    checkpointer = None
    if out is not None:
        if primary:
            out.mkdir(parents=True, exist_ok=True)
            _write_atomic(out / "config.json", json.dumps(run_meta, indent=2))
            _write_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in metrics_log))
        checkpointer = ckpt.Checkpointer(out)

    def save(iteration: int, state) -> None:
        if checkpointer is not None:
            checkpointer.save(iteration, {"state": state, "k_train": k_train},
                              {**expect, "metrics": metrics_log})

    untrained = None
    if spec.final_table is None:
        with parallel.use_mesh(mesh):
            untrained = evaluate(state0, k_eval)

    stop: dict[str, int | None] = {"signum": None}
    old_handlers = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            if stop["signum"] is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            stop["signum"] = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)

    bar = _progress(num_batches, progress, initial=start)
    fh = open(out / "metrics.jsonl", "a") if out is not None and primary else None
    try:
        t0 = time.perf_counter() - wall0
        with parallel.use_mesh(mesh):
            for it in range(start, num_batches):
                new_state, metrics, bad_leaf = step(state, k_train, np.int32(it))
                metrics, bad_leaf = parallel.to_host((metrics, bad_leaf))
                wall = time.perf_counter() - t0
                rows = []
                for i in range(S):
                    row = {"iteration": it + 1, "seed": seeds[i]}
                    row.update({k: float(np.reshape(v, (S,))[i]) for k, v in metrics.items()})
                    row["wall_s"] = wall
                    rows.append(row)
                bad = [(r["seed"], k, v) for r in rows for k, v in r.items() if not np.isfinite(v)]
                if bad or int(bad_leaf) >= 0:
                    what = (f"metric {bad[0][1]!r} = {bad[0][2]} (seed {bad[0][0]})" if bad
                            else f"updated state {float_paths[int(bad_leaf)]}")
                    kept = checkpointer.last_saved if checkpointer is not None else None
                    where = (f"the last good checkpoint (meta-iteration {kept}) is kept in {out / ckpt.CHECKPOINT_DIR}"
                             if kept is not None else "no checkpoint was written before it")
                    raise NonFiniteError(
                        f"non-finite value at meta-iteration {it + 1}: {what}; training stopped, {where}"
                    )
                state = new_state
                metrics_log.extend(rows)
                if fh is not None:
                    fh.write("".join(json.dumps(r) + "\n" for r in rows))
                    fh.flush()
                if bar is not None:
                    bar.set_postfix({k: f"{np.mean([r[k] for r in rows]):.2f}" for k in rows[0] if k.endswith(("_return", "_reward"))})
                    bar.update(1)
                if callback is not None:
                    callback(rows)
                if checkpoint_every and (it + 1) % checkpoint_every == 0:
                    save(it + 1, state)
                if stop["signum"] is not None:
                    save(it + 1, state)
                    name = signal.Signals(stop["signum"]).name
                    msg = f"stopped by {name} after meta-iteration {it + 1}"
                    if out is not None:
                        msg += f"; checkpoint saved, continue with: jaxmeta train --resume {out}"
                    log(msg)
                    raise TrainingInterrupted(msg, stop["signum"])
        save(num_batches, state)
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        if bar is not None:
            bar.close()
        if fh is not None:
            fh.close()
        if checkpointer is not None:
            checkpointer.close()

    curves = {}
    with parallel.use_mesh(mesh):
        if spec.final_table is None:
            trained = evaluate(state, k_eval)
            untrained, trained = parallel.to_host((untrained, trained))
            curves = {"untrained": untrained, "trained": trained}
            per_seed = [
                adaptation_table(*(jax.tree.map(lambda x: x[i], c) if batched else c for c in (untrained, trained)))
                for i in range(S)
            ]
            title = "adaptation on held-out tasks (mean return after k inner steps)"
        else:
            host_state = parallel.to_host(state)
            per_seed = [
                spec.final_table(env, config, algo, jax.tree.map(lambda x: x[i], host_state) if batched else host_state,
                                 k_eval[i] if batched else k_eval)
                for i in range(S)
            ]
            title = "held-out tasks"
    header, rows = aggregate_tables(per_seed)
    if batched:
        title += f", mean over {S} seeds ({seeds[0]}..{seeds[-1]})"
    text = format_table(header, rows)
    log(f"\n{title}\n{text}")
    if out is not None and primary:
        (out / "final_table.txt").write_text(title + "\n" + text + "\n")
        table_json = {"header": header, "rows": _to_jsonable(rows)}
        if batched:
            table_json["per_seed"] = {str(s): {"header": h, "rows": _to_jsonable(r)} for s, (h, r) in zip(seeds, per_seed)}
        (out / "final_table.json").write_text(json.dumps(table_json, indent=2))
        plot_returns(metrics_log, out / "returns.png", f"{spec.name} on {env_name or type(env).__name__}")
        log(f"results in {out}")
    return RunResult(out, state, metrics_log, (header, rows), curves)


def resume(run_dir: str | os.PathLike, *, num_batches: int | None = None, **kwargs) -> RunResult:
    """Continue the run in `run_dir` from its newest checkpoint (as `jaxmeta train --resume`).

    The algorithm, environment, config and seeds come from the run's config.json;
    `num_batches` may extend the run.
    """
    from jaxmeta import checkpoint as ckpt
    from jaxmeta import envs
    from jaxmeta.algorithms import registry

    out = Path(run_dir)
    try:
        meta = json.loads((out / "config.json").read_text())
        spec = registry.get(meta["algorithm"])
    except (OSError, ValueError, KeyError) as e:
        raise ckpt.CheckpointError(f"cannot resume {out}: no readable config.json of a run ({e})") from e
    env_name = meta["env"] or spec.default_env
    env = envs.make(env_name, **meta["env_kwargs"])
    config = config_from_json(spec.config_cls, meta["config"])
    return train(
        spec, env, config, num_batches=num_batches or meta["num_batches"], seed=meta["seed"],
        num_seeds=meta.get("num_seeds", 1), run_dir=out, env_name=meta["env"], env_kwargs=meta["env_kwargs"],
        checkpoint_every=kwargs.pop("checkpoint_every", meta.get("checkpoint_every", 0)), resume=True, **kwargs,
    )


def config_from_json(cls, values: dict):
    """A config dataclass from its JSON form (lists back to tuples where the field is one)."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            kw[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


def run(
    algorithm: str,
    env: str | None = None,
    config: Any = None,
    *,
    env_kwargs: dict | None = None,
    num_batches: int = 100,
    seed: int = 0,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    **kwargs,
) -> RunResult:
    """Train a registered algorithm by name, as `jaxmeta train` does (for notebooks).

    Further keyword arguments (num_seeds, checkpoint_every, callback, ...) go to `train`.
    """
    from jaxmeta import envs
    from jaxmeta.algorithms import registry

    spec = registry.get(algorithm)
    env_name = env or spec.default_env
    env_obj = envs.make(env_name, **(env_kwargs or {}))
    config = spec.config_cls() if config is None else config
    return train(
        spec, env_obj, config, num_batches=num_batches, seed=seed, run_dir=run_dir,
        env_name=env_name, env_kwargs=env_kwargs, progress=progress, log=log, **kwargs,
    )
