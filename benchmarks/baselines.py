"""The RL^2 papers' baselines against RL^2 Tables 1-2 (Duan et al. 2016), cell by cell.

For every cell (bandits: n pulls x k arms; tabular MDPs: n episodes) every baseline plays one
trial on each of 1,000 held-out tasks (PRNGKey(eval_seed), the learners' eval_tasks); its
constants are tuned first on training tasks (`jaxmeta.evaluation.tuned_constants`). Prints
one JSON line per (cell, baseline): measured mean trial reward, its standard error, the
paper's value (jaxmeta/data/papers.toml), ratio, whether it is within 3 %, the tuned
constant and wall seconds (first call, compilation included); and one line per cell with
the tuning and Gittins-table seconds.

Run: PYTHONPATH=. python benchmarks/baselines.py [--tables bandits,mdps] [--bandit-cells 10x5,100x5]
     [--mdp-cells 10,25]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from common import device_info, emit  # noqa: E402

from jaxmeta import evaluation as ev  # noqa: E402
from jaxmeta.envs import BernoulliBandit, TabularMDP  # noqa: E402
from jaxmeta.papers import paper_values  # noqa: E402

BANDIT_CELLS = [(n, k) for n in (10, 100, 500) for k in (5, 10, 50)]
MDP_CELLS = [10, 25, 50, 75, 100]


def _line(table, cell, name, curve, wall, tuned, paper, extra=None):
    totals = np.asarray(curve.per_task).sum(axis=1)
    measured = float(totals.mean())
    rec = {"benchmark": "baselines", "table": table, **cell, "baseline": name, "measured": round(measured, 3),
           "stderr": round(float(totals.std(ddof=1) / np.sqrt(len(totals))), 3), "paper": paper,
           "ratio": None if not paper else round(measured / paper, 4),
           "within_3pct": None if not paper else bool(abs(measured / paper - 1.0) <= 0.03),
           "tuned": tuned, "wall_s": round(wall, 2), "num_tasks": int(len(totals))}
    rec.update(extra or {})
    emit(rec)


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def bandit_cell(n, k, args):
    env = BernoulliBandit(num_arms=k)
    tasks = env.task_distribution().held_out_batch(jax.random.PRNGKey(args.eval_seed), args.num_tasks)
    tuned, tune_s = _timed(lambda: ev.tuned_constants(env, n, num_tasks=args.num_tune_tasks))
    table, gittins_s = _timed(lambda: ev.cached_gittins_table(n * env.horizon, "float32"))  # once per n (cached)
    emit({"benchmark": "baselines_setup", "table": "rl2_bandits", "n": n, "k": k, "tuned": tuned,
          "tune_s": round(tune_s, 2), "gittins_table_s": round(gittins_s, 2),
          "gittins_table_entries": int(table.values.shape[0]), "num_tune_tasks": args.num_tune_tasks})
    paper = paper_values("rl2_bandits")
    keys = jax.random.split(jax.random.PRNGKey(args.seed), len(ev.BANDIT_STRATEGIES))
    for s, key in zip(ev.BANDIT_STRATEGIES, keys):
        fn = jax.jit(lambda key, tab, s=s: ev.bandit_baseline(env, tasks, key, n, s, tuned.get(s),
                                                              tab if s == "gittins" else None))
        curve, wall = _timed(lambda: fn(key, table))
        col = ev.BANDIT_COLUMNS[s]
        _line("rl2_bandits", {"n": n, "k": k}, col, curve, wall, tuned.get(s), paper.value(col, n=n, k=k))


def mdp_cell(n, args):
    env = TabularMDP()
    tasks = env.task_distribution().held_out_batch(jax.random.PRNGKey(args.eval_seed), args.num_tasks)
    tuned, tune_s = _timed(lambda: ev.tuned_constants(env, n, num_tasks=args.num_tune_tasks_mdp))
    emit({"benchmark": "baselines_setup", "table": "rl2_mdps", "n": n, "tuned": tuned, "tune_s": round(tune_s, 2),
          "num_tune_tasks": args.num_tune_tasks_mdp})
    paper = paper_values("rl2_mdps")
    keys = jax.random.split(jax.random.PRNGKey(args.seed), len(ev.MDP_STRATEGIES))
    for s, key in zip(ev.MDP_STRATEGIES, keys):
        if s == "random":
            fn = jax.jit(lambda key: ev.random_baseline(env, tasks, key, n))
        else:
            fn = jax.jit(lambda key, s=s: ev.mdp_baseline(env, tasks, key, n, s, tuned.get(s)))
        curve, wall = _timed(lambda: fn(key))
        col = ev.MDP_COLUMNS[s]
        _line("rl2_mdps", {"n": n}, col, curve, wall, tuned.get(s), paper.value(col, n=n))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default="bandits,mdps")
    p.add_argument("--bandit-cells", default=",".join(f"{n}x{k}" for n, k in BANDIT_CELLS))
    p.add_argument("--mdp-cells", default=",".join(map(str, MDP_CELLS)))
    p.add_argument("--num-tasks", type=int, default=1000)
    p.add_argument("--num-tune-tasks", type=int, default=ev.NUM_TUNE_TASKS)
    p.add_argument("--num-tune-tasks-mdp", type=int, default=ev.NUM_TUNE_TASKS)
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=1, help="key of the evaluation trials")
    args = p.parse_args()
    emit({"benchmark": "baselines_device", **device_info()})
    for table in args.tables.split(","):  # in the order given
        if table == "bandits":
            for cell in args.bandit_cells.split(","):
                n, k = map(int, cell.split("x"))
                bandit_cell(n, k, args)
        elif table == "mdps":
            for n in map(int, args.mdp_cells.split(",")):
                mdp_cell(n, args)
        else:
            raise SystemExit(f"unknown table {table!r}: bandits or mdps")


if __name__ == "__main__":
    main()
