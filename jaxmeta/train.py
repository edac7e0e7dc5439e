"""The training driver: the loop, progress, metrics, plots and the results folder.

This is the one place (with `cli.py` and `benchmarks/`) that jits, reads the clock,
prints and writes files. Every algorithm goes through it by its `Algorithm` contract.
"""
from __future__ import annotations

import dataclasses
import json
import os
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
    metrics: list[dict]  # one dict of floats per meta-iteration
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
    """Plot mean return (with the spread over tasks) against adaptation steps per curve."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, curve in curves.items():
        k = np.arange(curve.returns.shape[0])
        std = np.std(np.asarray(curve.per_task), axis=0)
        ax.plot(k, np.asarray(curve.returns), marker="o", label=label)
        ax.fill_between(k, np.asarray(curve.returns) - std, np.asarray(curve.returns) + std, alpha=0.2)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean return on held-out tasks")
    ax.set_xticks(range(max(c.returns.shape[0] for c in curves.values())))
    ax.grid(alpha=0.3)
    ax.legend()
    if own and path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=100)
        plt.close(ax.figure)
    return ax


def plot_returns(metrics: list[dict], path: Path, title: str) -> bool:
    """Plot every `*_return` metric over meta-iterations into a PNG; False if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional
        return False
    keys = sorted({k for m in metrics for k in m if k.endswith("_return")})
    fig, ax = plt.subplots(figsize=(6, 4))
    its = [m["iteration"] for m in metrics]
    for k in keys:
        ax.plot(its, [m.get(k, np.nan) for m in metrics], label=k.replace("_", " "))
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


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="meta-training", unit="it", dynamic_ncols=True)


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """root/name, or root/name-2, -3, ... if taken: an existing run is never overwritten."""
    root = Path(root)
    path, i = root / name, 1
    while path.exists():
        i += 1
        path = root / f"{name}-{i}"
    path.mkdir(parents=True)
    return path


def train(
    spec: AlgorithmSpec,
    env: Any,
    config: Any,
    *,
    num_batches: int,
    seed: int = 0,
    run_dir: str | os.PathLike | None = None,
    env_name: str = "",
    env_kwargs: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train `spec` on `env` for `num_batches` meta-iterations and write the results.

    The run folder gets config.json, metrics.jsonl (one line per meta-iteration),
    returns.png and final_table.{txt,json}; the final table is also logged.
    """
    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be an integer >= 1, got {num_batches!r}")
    algo = spec.build(env, config)
    key = jax.random.PRNGKey(seed)
    k_init, k_train, k_eval = jax.random.split(key, 3)
    state = algo.init(k_init)
    train_step = jax.jit(algo.train_step)
    evaluate = jax.jit(algo.evaluate)

    out = Path(run_dir) if run_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "algorithm": spec.name,
            "env": env_name,
            "env_kwargs": _to_jsonable(env_kwargs or {}),
            "config": _to_jsonable(config),
            "num_batches": num_batches,
            "seed": seed,
            "jax_version": jax.__version__,
            "device": str(jax.devices()[0]),
        }
        (out / "config.json").write_text(json.dumps(meta, indent=2))

    untrained = evaluate(state, k_eval) if spec.final_table is None else None
    metrics_log: list[dict] = []
    bar = _progress(num_batches, progress)
    fh = open(out / "metrics.jsonl", "w") if out is not None else None
    try:
        t0 = time.perf_counter()
        for it in range(num_batches):
            k_it = jax.random.fold_in(k_train, it)
            state, metrics = train_step(state, k_it)
            row = {"iteration": it + 1, **{k: float(v) for k, v in metrics.items()}}
            row["wall_s"] = time.perf_counter() - t0
            metrics_log.append(row)
            if fh is not None:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
            if bar is not None:
                bar.set_postfix({k: f"{row[k]:.2f}" for k in row if k.endswith("_return")})
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if fh is not None:
            fh.close()

    curves = {}
    if spec.final_table is None:
        trained = evaluate(state, k_eval)
        curves = {"untrained": untrained, "trained": trained}
        header, rows = adaptation_table(untrained, trained)
        title = "adaptation on held-out tasks (mean return after k inner steps)"
    else:
        header, rows = spec.final_table(env, config, algo, state, k_eval)
        title = "held-out tasks"
    text = format_table(header, rows)
    log(f"\n{title}\n{text}")
    if out is not None:
        (out / "final_table.txt").write_text(title + "\n" + text + "\n")
        (out / "final_table.json").write_text(json.dumps({"header": header, "rows": _to_jsonable(rows)}, indent=2))
        plot_returns(metrics_log, out / "returns.png", f"{spec.name} on {env_name or type(env).__name__}")
        log(f"results in {out}")
    return RunResult(out, state, metrics_log, (header, rows), curves)


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
) -> RunResult:
    """Train a registered algorithm by name, as `jaxmeta train` does (for notebooks)."""
    from jaxmeta import envs
    from jaxmeta.algorithms import registry

    spec = registry.get(algorithm)
    env_name = env or spec.default_env
    env_obj = envs.make(env_name, **(env_kwargs or {}))
    config = spec.config_cls() if config is None else config
    return train(
        spec, env_obj, config, num_batches=num_batches, seed=seed, run_dir=run_dir,
        env_name=env_name, env_kwargs=env_kwargs, progress=progress, log=log,
    )
