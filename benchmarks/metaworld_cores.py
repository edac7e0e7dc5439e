"""How Meta-World stepping itself scales over processes on this machine, with no learner.

Each process steps `--envs` ML1 environments for `--steps` steps with random actions
(jaxmeta's worker code, `MetaWorldSlice`, in-process). One process alone, then `--procs`
processes at once: if they run each at the solo speed, N workers can give N x; what
they give here bounds what any collector can reach with that many workers. One JSON
line per setting (steps/s of each process, in all, and the ratio to one process).

    python benchmarks/metaworld_cores.py --envs 100 --steps 200 --procs 2
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]  # `metaworld` is the package


def _run(args, seed, out):
    import numpy as np

    from jaxmeta.envs import make
    from jaxmeta.envs.metaworld import benchmark_tasks
    from jaxmeta.envs.host_worker import MetaWorldSlice

    env = make("metaworld-ml1", task_name=args.task, num_workers=0)
    goals = benchmark_tasks(env)[0][0]
    envs = MetaWorldSlice(args.envs)
    envs.set_tasks([goals[i % len(goals)] for i in range(args.envs)])
    envs.reset(seed)
    rng = np.random.default_rng(seed)
    for _ in range(5):  # warm up
        envs.step(rng.uniform(-1, 1, (args.envs, 4)))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        envs.step(rng.uniform(-1, 1, (args.envs, 4)))
    out.put(args.envs * args.steps / (time.perf_counter() - t0))


def _together(args, n):
    q = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_run, args=(args, i, q)) for i in range(n)]
    for p in procs:
        p.start()
    rates = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="button-press-v3")
    p.add_argument("--envs", type=int, default=100)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--procs", type=int, default=2)
    args = p.parse_args(argv)
    solo = _together(args, 1)[0]
    rates = _together(args, args.procs)
    print(json.dumps({"benchmark": "metaworld_process_scaling", "task": args.task, "envs_per_process": args.envs,
                      "steps": args.steps, "solo_steps_per_s": solo, "processes": args.procs,
                      "each_steps_per_s": rates, "total_steps_per_s": sum(rates),
                      "scaling_over_one_process": sum(rates) / solo, "cpu_count": os.cpu_count(),
                      "load_average_1m": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
