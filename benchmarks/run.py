"""Run every benchmark and print one markdown table (plus the raw JSON lines).

    python benchmarks/run.py [--preset cpu|gpu] [--seeds 8] [--skip seeds_vmap,...]

Each script runs in its own process (clean peak memory, no shared compile caches):
maml_navigation, rl2_bandit, snail_bandit, maml_locomotion (if the script exists and Brax
imports), seeds_vmap (8 vmapped seeds against 1, as a ratio measured in one run) and maze_q
(maze generation, MAML-Q's inner Q-learning and meta-training).
The "cpu" preset uses batch sizes that finish in minutes on a laptop; "gpu" uses batch
sizes that fill an accelerator.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PRESETS = {
    "cpu": {
        "maml_navigation": ["--meta-batch-size", "10", "--num-episodes", "10", "--repeats", "3"],
        "rl2_bandit": ["--models", "gru64", "--meta-batch-size", "64", "--repeats", "3"],
        "snail_bandit": ["--models", "snail16", "--meta-batch-size", "32", "--repeats", "3"],
        "maml_locomotion": ["--preset", "cpu"],
        "seeds_vmap": ["--preset", "cpu", "--repeats", "3"],
        "maze_q": ["--repeats", "3"],
    },
    "gpu": {
        "maml_navigation": ["--meta-batch-size", "160", "--num-episodes", "40", "--repeats", "7"],
        "rl2_bandit": ["--meta-batch-size", "2048"],
        "snail_bandit": ["--meta-batch-size", "1024"],
        "maml_locomotion": ["--preset", "gpu"],
        "seeds_vmap": ["--preset", "gpu"],
        "maze_q": ["--inner-mazes", "4096", "--meta-batch-size", "512"],
    },
}


def _available(name: str) -> str | None:
    """None if the benchmark can run here, else why not."""
    if not (HERE / f"{name}.py").exists():
        return "script not present"
    if name == "maml_locomotion" and importlib.util.find_spec("brax") is None:
        return "brax not installed"
    return None


def _row(r: dict) -> list[str]:
    tag = r.get("model", r.get("simulator"))
    algo = r.get("benchmark", "?") + (f" ({tag})" if tag else "")
    env = {"maml_navigation": "navigation2d", "rl2_bandit": "bandit", "snail_bandit": "bandit",
     "maml_locomotion": "halfcheetah_vel", "maze_q_inner": "maze_gen", "maze_q_meta_train": "maze_gen"}.get(
        r.get("benchmark"), r.get("env", r.get("benchmark", "").split("_", 1)[-1]))
    s_it = r.get("s_per_meta_iteration", r.get("train_step_s_median"))
    mem = r.get("peak_device_mb", r.get("peak_rss_mb"))
    fmt = lambda x, f: "" if x is None else format(x, f)
    return [algo, env, fmt(r.get("env_steps_per_s"), ",.0f"), fmt(s_it, ".4f"), fmt(r.get("compile_s"), ".1f"),
            fmt(mem, ",.0f") + (" (device)" if "peak_device_mb" in r else " (RSS)" if mem else ""),
            str(r.get("device", "")), str(r.get("jax", ""))]


def markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def speed_table(records: list[dict]) -> str:
    """The markdown table of the timed measurements, one row each. Summary lines (e.g.
    maml_locomotion's, whose env_steps_per_s is a dict per path) and the seeds_vmap
    ratios are left to the raw JSON lines and their own table."""
    header = ["algorithm", "env", "env steps/s", "s / meta-iteration", "compile s", "peak memory MB", "device", "jax"]
    timed = [r for r in records
             if r.get("benchmark") != "seeds_vmap" and isinstance(r.get("env_steps_per_s"), (int, float))]
    return markdown(header, [_row(r) for r in timed])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--seeds", type=int, default=8, help="seeds for the vmapped-seeds benchmark")
    p.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per script")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])))
    records, skipped = [], []
    for name, flags in PRESETS[args.preset].items():
        why = "skipped (--skip)" if name in args.skip.split(",") else _available(name)
        if why:
            skipped.append((name, why))
            continue
        if name == "seeds_vmap":
            flags = flags + ["--seeds", str(args.seeds)]
        cmd = [sys.executable, str(HERE / f"{name}.py"), *flags]
        print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            skipped.append((name, f"timed out after {args.timeout} s"))
            continue
        if out.returncode != 0:
            skipped.append((name, f"failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}"))
            continue
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
    print(f"## Benchmarks, preset {args.preset}\n")
    print(speed_table(records))
    seeds = [r for r in records if r.get("benchmark") == "seeds_vmap"]
    if seeds:
        print(f"\n### {args.seeds} vmapped seeds against 1 seed (one process)\n")
        print(markdown(
            ["algorithm", "s / it, 1 seed", f"s / it, {args.seeds} seeds", "ratio", "device"],
            [[r["algorithm"], f"{r['s_per_meta_iteration_1_seed']:.4f}",
              f"{r[f's_per_meta_iteration_{args.seeds}_seeds']:.4f}", f"{r['ratio']:.2f}x", r["device"]] for r in seeds],
        ))
    if skipped:
        print("\nnot run: " + "; ".join(f"{n}: {w}" for n, w in skipped))
    print("\n```")
    for r in records:
        print(json.dumps(r))
    print("```")


if __name__ == "__main__":
    main()
