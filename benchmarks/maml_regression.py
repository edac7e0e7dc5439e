"""Supervised MAML on sinusoid regression (Finn et al. 2017, sec. 5.1): speed and what it learns.

Prints one JSON line per measurement, after `jax.block_until_ready`, compilation timed
separately, with peak memory and the device:

- "maml_regression_step" (per K in `--shots`, second and first order): one jitted
  meta-iteration (sample M tasks and their points, inner step(s), meta-gradient, Adam,
  and the pretrained baseline's Adam step): median seconds per call over `--repeats`
  calls, and per meta-iteration inside a `lax.scan` of `--chunk` iterations (no
  dispatch), tasks/s;
- "maml_regression_learning" (per K and seed): `--iterations` meta-iterations of the
  paper's setting (meta-batch 25, one inner step of 0.01, Adam 1e-3), then the held-out
  MSE (600 tasks, 100 points each) after 0, 1 and 10 gradient steps on the K points, for
  MAML, the model pretrained on all tasks (same iterations and points; step size 0.01,
  and the step size tuned on training tasks) and the untrained initialisation.

    python benchmarks/maml_regression.py [--iterations 10000] [--shots 5,10] [--seeds 0] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from common import compiled, device_info, emit, median_time, peak_memory_mb  # noqa: E402
from jaxmeta.algorithms.maml_regression import MAMLRegression, MAMLRegressionConfig  # noqa: E402
from jaxmeta.envs import Sinusoid  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=10_000, help="meta-iterations of the learning runs (0: none)")
    p.add_argument("--shots", default="5,10", help="K values")
    p.add_argument("--seeds", default="0", help="seeds of the learning runs")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--chunk", type=int, default=500, help="meta-iterations per scanned call")
    p.add_argument("--meta-batch-size", type=int, default=25)
    p.add_argument("--meta-sgd", action="store_true")
    args = p.parse_args(argv)
    env = Sinusoid()
    shots = [int(k) for k in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    # ---- speed
    for K in shots:
        for first_order in (False, True):
            config = MAMLRegressionConfig(num_shots=K, meta_batch_size=args.meta_batch_size, first_order=first_order,
                                          meta_sgd=args.meta_sgd)
            algo = MAMLRegression(env, env.task_distribution(), config).algorithm()
            state = algo.init(jax.random.PRNGKey(0))
            keys = iter(list(jax.random.split(jax.random.PRNGKey(1), 10 * args.repeats + 10)))
            step, compile_s = compiled(algo.train_step, state, next(keys))
            state, _ = step(state, next(keys))
            jax.block_until_ready(state)

            def one():
                nonlocal state
                state, _ = step(state, next(keys))
                return state

            sec, times = median_time(one, args.repeats)
            scan = lambda s, ks: jax.lax.scan(lambda s, k: algo.train_step(s, k), s, ks)
            chunk_keys = jax.random.split(jax.random.PRNGKey(2), args.chunk)
            scanned, scan_compile_s = compiled(scan, state, chunk_keys)
            jax.block_until_ready(scanned(state, chunk_keys))
            scan_sec, scan_times = median_time(lambda: scanned(state, chunk_keys), max(3, args.repeats // 5))
            emit({"benchmark": "maml_regression_step", "num_shots": K, "num_query": config.query_size,
                  "meta_batch_size": config.meta_batch_size, "num_inner_steps": config.num_inner_steps,
                  "first_order": first_order, "meta_sgd": config.meta_sgd, "hidden_sizes": config.hidden_sizes,
                  "s_per_meta_iteration": sec, "s_per_meta_iteration_all": times,
                  "tasks_per_s": config.meta_batch_size / sec, "compile_s": compile_s,
                  "s_per_meta_iteration_scanned": scan_sec / args.chunk,
                  "tasks_per_s_scanned": config.meta_batch_size * args.chunk / scan_sec,
                  "scan_chunk": args.chunk, "scan_compile_s": scan_compile_s, **peak_memory_mb(), **device_info()})

    # ---- learning: the paper's setting for `--iterations` meta-iterations, then held-out MSE
    if args.iterations <= 0:
        return
    for K in shots:
        config = MAMLRegressionConfig(num_shots=K, meta_batch_size=args.meta_batch_size, meta_sgd=args.meta_sgd)
        m = MAMLRegression(env, env.task_distribution(), config)
        algo = m.algorithm()
        chunk = min(args.chunk, args.iterations)
        train = jax.jit(lambda s, ks: jax.lax.scan(lambda s, k: algo.train_step(s, k), s, ks))
        table = jax.jit(m.baseline_curves)
        for seed in seeds:
            k_init, k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
            state0 = state = algo.init(k_init)
            keys = jax.random.split(k_train, args.iterations)
            t0 = time.perf_counter()
            post = []
            for start in range(0, args.iterations, chunk):
                state, metrics = train(state, keys[start:start + chunk])
                post.append(np.asarray(metrics["post_mse"]))
            jax.block_until_ready(state)
            wall = time.perf_counter() - t0
            curves, rates = table(state, k_eval, state0)
            N = config.num_eval_steps
            record = {"benchmark": "maml_regression_learning", "num_shots": K, "seed": seed,
                      "meta_iterations": args.iterations, "meta_batch_size": config.meta_batch_size,
                      "meta_sgd": config.meta_sgd, "num_eval_tasks": config.num_eval_tasks,
                      "num_eval_points": config.num_eval_points, "train_wall_s": wall,
                      "train_post_mse_last_1000": float(np.concatenate(post)[-1000:].mean())}
            for name, c in curves.items():
                per_task = np.asarray(c.per_task)  # [tasks, N+1]
                key = name.replace(", ", "_").replace(" ", "_")
                record[f"{key}_step_size"] = float(rates[name])
                for k in (0, 1, N):
                    record[f"{key}_mse_{k}"] = float(per_task[:, k].mean())
                    record[f"{key}_mse_{k}_ci95"] = float(1.96 * per_task[:, k].std() / np.sqrt(per_task.shape[0]))
            emit({**record, **peak_memory_mb(), **device_info()})


if __name__ == "__main__":
    main()
