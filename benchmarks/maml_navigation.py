"""MAML-TRPO on 2D navigation with pytorch-maml-rl's default config.

Prints one JSON line: seconds per meta-iteration (median, compile excluded), env steps
per second of meta-training, compile seconds, peak memory, achieved GFLOP/s beside a
64-wide float32 matmul timed in the same run, jax version and device.

    python benchmarks/maml_navigation.py [--repeats 7] [--meta-batch-size 20] ...
    python benchmarks/maml_navigation.py --host-devices 1,20

`--host-devices N[,M...]` runs the benchmark once per value, each in a fresh process
with N XLA host (CPU) devices and the task batch sharded over a "tasks" mesh of them;
on a CPU this lets XLA run the tasks' work concurrently and in cache-sized pieces.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from common import device_info, emit, fn_flops, matmul_gflops, median_time, peak_memory_mb  # noqa: E402
from jaxmeta.algorithms.maml import MAML, MAMLConfig  # noqa: E402
from jaxmeta.envs import Navigation2D  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--meta-batch-size", type=int, default=20)
    p.add_argument("--num-episodes", type=int, default=20)
    p.add_argument("--num-inner-steps", type=int, default=1)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--outer", default="trpo")
    p.add_argument("--host-devices", default=None, help="comma-separated CPU device counts, one run each")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    if args.host_devices is not None:
        i = argv.index("--host-devices")
        rest = argv[:i] + argv[i + 2 :]
        for n in args.host_devices.split(","):
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={int(n)}")
            subprocess.run([sys.executable, os.path.abspath(__file__), *rest], env=env, check=True)
        return
    from jaxmeta import parallel

    mesh = parallel.task_mesh() if len(jax.devices()) > 1 else None
    with parallel.use_mesh(mesh):
        _bench(args)


def _bench(args):
    config = MAMLConfig(
        meta_batch_size=args.meta_batch_size, num_episodes=args.num_episodes,
        num_inner_steps=args.num_inner_steps, first_order=args.first_order, outer=args.outer,
    )
    env = Navigation2D()
    m = MAML(env, env.task_distribution(), config)
    state = m.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)

    t0 = time.perf_counter()
    train_step = m.algorithm().train_step
    step = jax.jit(train_step).lower(state, key).compile()
    compile_s = time.perf_counter() - t0

    # warm up (and move past the first iterations, whose line search backtracks more)
    for i in range(2):
        state, metrics = step(state, jax.random.fold_in(key, i))
    jax.block_until_ready(state)

    ls_steps = []
    states = [state]

    def one():
        nonlocal state
        state, met = step(state, jax.random.fold_in(key, 100 + len(ls_steps)))
        ls_steps.append(met.get("ls_steps", 0))
        return state

    sec, times = median_time(one, args.repeats)
    ls_mean = float(np.mean([float(x) for x in ls_steps])) if config.outer == "trpo" else 0
    # while loops in train_step, in order: CG (cg_iters, it rarely stops early), line search
    trips = [config.cg_iters, max(1, round(ls_mean))] if config.outer == "trpo" else []
    flops = fn_flops(train_step, states[0], key, while_trips=trips)
    env_steps = config.meta_batch_size * config.num_episodes * env.horizon * (config.num_inner_steps + 1)
    emit({
        "benchmark": "maml_navigation",
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k in (
            "meta_batch_size", "num_episodes", "num_inner_steps", "first_order", "outer", "hidden_sizes", "cg_iters")},
        "s_per_meta_iteration": sec,
        "s_per_meta_iteration_all": times,
        "env_steps_per_meta_iteration": env_steps,
        "env_steps_per_s": env_steps / sec,
        "compile_s": compile_s,
        "line_search_steps_mean": ls_mean,
        "gflop_per_meta_iteration": flops / 1e9,
        "achieved_gflops": flops / sec / 1e9,
        "matmul64_gflops": matmul_gflops(64),
        "task_mesh_devices": len(jax.devices()),
        **peak_memory_mb(),
        **device_info(),
    })


if __name__ == "__main__":
    main()
