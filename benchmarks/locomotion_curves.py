"""Learning curves of MAML runs on a locomotion task: return before and after adaptation
against environment steps, read from the runs' own folders (`jaxmeta train maml ...`).

    python benchmarks/locomotion_curves.py runs/maml-dir:MAML-TRPO runs/promp-dir:ProMP \
        --every 8e6 --window 10 --plot docs/halfcheetah_dir_maml_promp_curves.png

Each RUN[:LABEL] is a run folder (metrics.jsonl and config.json). Environment steps per
meta-iteration are meta_batch_size x num_episodes x horizon x (num_inner_steps + 1): every
task's episodes before each inner step and after the last one. One JSON line per run and
step count: the training tasks' mean return over the `window` meta-iterations ending
there, and the run's wall time so far (since it began, across resumes). With several
seeds, each meta-iteration is their mean. A run still being written is read as it stands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxmeta.driver.loop import read_settings
from jaxmeta.driver.run_folder import RunFolder, RunFolderError


def steps_per_iteration(folder: RunFolder) -> int:
    s = read_settings(folder, what="read")
    c = s.config
    horizon = s.env_kwargs.get("horizon")
    if horizon is None:
        from jaxmeta import envs
        horizon = envs.make(s.env).horizon
    return int(c.meta_batch_size * c.num_episodes * horizon * (c.num_inner_steps + 1))


def curve(run: Path) -> dict:
    folder = RunFolder(run, write=False)
    per_it = steps_per_iteration(folder)  # first: names a missing folder or config.json
    rows = folder.read_metrics()
    if not rows:
        raise RunFolderError(f"{run} has no metrics yet (metrics.jsonl is missing or empty)")
    it = np.array(sorted({r["iteration"] for r in rows}))

    def per_iteration(key):  # the mean over seeds, as the run's own returns.png plots it
        by_it = {i: [] for i in it}
        for r in rows:
            by_it[r["iteration"]].append(r.get(key, np.nan))
        return np.array([np.mean(by_it[i]) for i in it])

    return {"iteration": it, "env_steps": it * per_it, "pre": per_iteration("pre_return"),
            "post": per_iteration("post_return"), "wall": per_iteration("wall_s")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN[:LABEL]")
    ap.add_argument("--every", type=float, default=8e6, help="report every this many env steps (default 8e6)")
    ap.add_argument("--window", type=int, default=10, help="meta-iterations averaged per point (default 10)")
    ap.add_argument("--plot", help="write the curves to this PNG")
    a = ap.parse_args(argv)
    if a.every <= 0 or a.window < 1:
        ap.error("--every must be > 0 and --window >= 1")
    curves = {}
    for spec in a.runs:
        path, _, label = spec.partition(":")
        try:
            curves[label or Path(path).name] = curve(Path(path))
        except (RunFolderError, KeyError, OSError, ValueError) as e:
            print(f"locomotion_curves: {path}: {e}", file=sys.stderr)
            return 2
    for label, c in curves.items():
        last = c["env_steps"][-1]
        for m in [*np.arange(a.every, last, a.every), last]:
            i = int(np.searchsorted(c["env_steps"], m, side="right")) - 1
            if i < 0:
                continue
            lo = max(0, i - a.window + 1)
            print(json.dumps({"benchmark": "locomotion_curve", "run": label, "iteration": int(c["iteration"][i]),
                              "env_steps": int(c["env_steps"][i]), "window": i - lo + 1,
                              "pre_return": round(float(c["pre"][lo:i + 1].mean()), 2),
                              "post_return": round(float(c["post"][lo:i + 1].mean()), 2),
                              "wall_s": round(float(c["wall"][i]), 1)}))
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        for k, (label, c) in enumerate(curves.items()):
            w = min(a.window, len(c["post"]))
            smooth = lambda v: np.convolve(v, np.ones(w) / w, mode="valid")  # noqa: E731
            x = c["env_steps"][w - 1:]
            ax.plot(x, smooth(c["post"]), color=f"C{k}", label=f"{label}, after adaptation")
            ax.plot(x, smooth(c["pre"]), color=f"C{k}", ls="--", label=f"{label}, before")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"mean return ({a.window}-iteration mean)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
