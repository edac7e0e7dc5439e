"""The command line's CPU layout, measured through `jaxmeta train` itself.

Each case is a fresh `jaxmeta train` process (so that its XLA host-device count is its
own), timed from the run's metrics.jsonl: seconds per meta-iteration is the median of
the per-iteration wall-clock differences after the first iteration (which includes
compilation; its time is reported separately as `first_iteration_s`). One JSON line per
case, then one per comparison (ratios of cases measured in this same invocation):

- MAML on navigation2d (pytorch-maml-rl's config): the CLI's CPU default (one host device
  per task of the meta-batch) against one device;
- `--seeds S` against S single-seed runs one after the other, for MAML, RL^2 and SNAIL,
  in both seed layouts ("map": seeds in turn inside one program; "vmap").

    python benchmarks/cpu_layout.py [--iterations 6] [--seeds 8] [--cases maml,seeds] [--algorithms maml,rl2,snail]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RL2 = ["rl2", "--env", "bandit", "--arms", "5", "--episodes", "10", "--hidden-size", "64"]
SNAIL = ["snail", "--env", "bandit", "--arms", "5", "--episodes", "10", "--filters", "16", "--key-size", "16",
         "--value-size", "16"]
MAML = ["maml", "--env", "navigation2d"]


def run_case(name: str, argv: list[str], iterations: int, one_device: bool = False) -> dict:
    env = dict(os.environ)
    if one_device:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jaxmeta.cli", "train", *argv, "--num-batches", str(iterations),
                        "--checkpoint-every", "0", "--no-progress", "--no-tensorboard", "--out", out, "--name", "r"],
                       env=env, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        run = Path(out) / "r"
        config = json.loads((run / "config.json").read_text())
        walls = sorted({json.loads(line)["wall_s"] for line in (run / "metrics.jsonl").read_text().splitlines()})
    steps = np.diff(walls)
    record = {"benchmark": "cpu_layout", "case": name, "argv": " ".join(argv), "s_per_meta_iteration": float(np.median(steps)),
              "s_per_meta_iteration_all": [round(float(s), 4) for s in steps], "first_iteration_s": walls[0],
              "process_wall_s": round(wall, 2), "device_count": config["device_count"],
              "seed_layout": config.get("seed_layout_used"), "num_seeds": config["num_seeds"], "device": config["device"]}
    print(json.dumps(record), flush=True)
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--cases", default="maml,seeds")
    p.add_argument("--algorithms", default="maml,rl2,snail", help="seeds case: the algorithms measured")
    args = p.parse_args(argv)
    cases = args.cases.split(",")
    n, S = args.iterations, args.seeds
    if "maml" in cases:
        default = run_case("maml default (CPU layout)", MAML, n)
        one = run_case("maml one device", MAML, n, one_device=True)
        print(json.dumps({"benchmark": "cpu_layout", "comparison": "maml one device / CPU default",
                          "ratio": one["s_per_meta_iteration"] / default["s_per_meta_iteration"]}), flush=True)
    if "seeds" in cases:
        for label, base in (("maml", MAML), ("rl2", RL2), ("snail", SNAIL)):
            if label not in args.algorithms.split(","):
                continue
            single = run_case(f"{label} one seed", base, n)
            for layout in ("map", "vmap"):
                many = run_case(f"{label} --seeds {S} --seed-layout {layout}", base + ["--seeds", str(S),
                                                                                  "--seed-layout", layout], n)
                print(json.dumps({"benchmark": "cpu_layout", "comparison": f"{label} --seeds {S} ({layout}) / "
                                  f"{S} sequential one-seed runs",
                                  "ratio": many["s_per_meta_iteration"] / (S * single["s_per_meta_iteration"])}),
                      flush=True)


if __name__ == "__main__":
    main()
