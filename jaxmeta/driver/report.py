"""Tables and plots of a run: the final table, per-seed aggregates, return curves."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

Table = tuple[list[str], list[list[Any]]]  # (header, rows)


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table with right-aligned numbers."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda xs: "  ".join(x.rjust(w) for x, w in zip(xs, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


def adaptation_table(untrained, trained) -> Table:
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


def aggregate_tables(tables: list[Table]) -> Table:
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


def plot_adaptation(curves: dict, path: str | os.PathLike | None = None, ax=None, xlabel: str = "adaptation steps",
                    metric: str = "returns", title: str | None = None, ylabel: str | None = None):
    """Plot mean return (or, with metric="success", success rate; or another per-task
    statistic named by `ylabel`) against adaptation steps per curve.

    The band is the spread over tasks, or over seeds when the curves carry a leading
    seed axis (returns [S, K+1], as a run with several seeds returns them).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    mean_of, per_task_of = (("success", "per_task_success") if metric == "success" else ("returns", "per_task"))
    for label, curve in curves.items():
        returns = np.asarray(getattr(curve, mean_of))
        if returns.ndim == 2:  # [S, K+1]: mean and std over seeds
            mean, std = returns.mean(axis=0), returns.std(axis=0)
            label = f"{label} ({returns.shape[0]} seeds)"
        else:
            mean, std = returns, np.std(np.asarray(getattr(curve, per_task_of)), axis=0)
        k = np.arange(mean.shape[0])
        ax.plot(k, mean, marker="o", label=label)
        ax.fill_between(k, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel(xlabel)
    if ylabel is None:
        ylabel = "success rate on held-out tasks" if metric == "success" else "mean return on held-out tasks"
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.set_xticks(range(max(np.asarray(c.returns).shape[-1] for c in curves.values())))
    ax.grid(alpha=0.3)
    ax.legend()
    if own and path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=100)
        plt.close(ax.figure)
    return ax


def score_suffixes(score: str = "return") -> tuple[str, ...]:
    """The training metrics a run's plot and progress bar show (`AlgorithmSpec.score`):
    `*_return` / `*_reward` for reinforcement learning, `*_<score>` for a supervised loss."""
    return ("_return", "_reward") if score == "return" else (f"_{score}",)


def curve_label(score: str = "return") -> str | None:
    """The y label of an adaptation plot of `score` (None: `plot_adaptation`'s own, for returns)."""
    return None if score == "return" else f"{score} on held-out tasks (lower is better)"


def plot_returns(metrics: list[dict], path: Path, title: str, score: str = "return") -> bool:
    """Plot every `*_return` / `*_reward` metric (or `*_<score>`, see `score_suffixes`) over
    meta-iterations into a PNG, and the `*_success` rates (Meta-World) in a second panel;
    False if matplotlib is missing.

    With several seeds (rows with a "seed" field) the line is the mean over seeds and
    the band their standard deviation.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional
        return False
    keys = sorted({k for m in metrics for k in m if k.endswith(score_suffixes(score))})
    success_keys = sorted({k for m in metrics for k in m if k.endswith("_success")})
    num_seeds = len({m.get("seed", 0) for m in metrics}) or 1
    if success_keys:
        fig, (ax, ax_s) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True)
    else:
        (fig, ax), ax_s = plt.subplots(figsize=(6, 4)), None
    its = sorted({m["iteration"] for m in metrics})
    panels = [(ax, k) for k in keys] + [(ax_s, k) for k in success_keys]
    for axis, k in panels:
        by_it = {it: [] for it in its}
        for m in metrics:
            by_it[m["iteration"]].append(m.get(k, np.nan))
        mean = np.array([np.mean(by_it[it]) for it in its])
        label = k.replace("_", " ")
        if num_seeds > 1:
            std = np.array([np.std(by_it[it]) for it in its])
            axis.fill_between(its, mean - std, mean + std, alpha=0.2)
            label += f" (mean ± std, {num_seeds} seeds)"
        axis.plot(its, mean, label=label)
    ax.set_ylabel("mean episode return" if score == "return" else f"{score} (training tasks)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend()
    if success_keys:
        ax_s.set_ylabel("success rate (training tasks)")
        ax_s.set_ylim(-0.02, 1.02)
        ax_s.grid(alpha=0.3)
        ax_s.legend()
    (ax_s if success_keys else ax).set_xlabel("meta-iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_maze(walls, start=None, goal=None, trajectory=None, path: str | os.PathLike | None = None, ax=None,
              title: str | None = None):
    """Draw a maze (a `MazeGenTask`'s occupancy grid) and optionally a trajectory, as a PNG.

    Args:
      walls: [2R+1, 2C+1] bool occupancy grid (True = wall).
      start, goal: [2] cells (row, col), drawn as a green and a red square.
      trajectory: [L, 2] cells visited in order (e.g. the agent's positions), drawn as a line.
      path: PNG file to write (None: only draw on `ax`).
    Returns:
      The matplotlib axes.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    walls = np.asarray(walls)
    own = ax is None
    if own:
        H, W = walls.shape
        fig, ax = plt.subplots(figsize=(max(2.0, W / 4), max(2.0, H / 4)))
    ax.imshow(walls, cmap="Greys", interpolation="nearest", vmin=0, vmax=1.25)
    to_px = lambda cell: (2 * np.asarray(cell)[..., 1] + 1, 2 * np.asarray(cell)[..., 0] + 1)  # (x, y)
    if trajectory is not None and len(trajectory):
        x, y = to_px(trajectory)
        ax.plot(x, y, color="tab:blue", linewidth=2, alpha=0.8)
    for cell, colour in ((start, "tab:green"), (goal, "tab:red")):
        if cell is not None:
            x, y = to_px(cell)
            ax.scatter([x], [y], marker="s", s=60, color=colour, zorder=3)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    if own and path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=100)
        plt.close(ax.figure)
    return ax
