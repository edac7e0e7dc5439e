"""Shared driver of the black-box meta-RL benchmarks (one JSON line per measurement)."""
from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import time

import jax

from common import fn_flops, matmul_gflops
from jaxmeta import parallel
from jaxmeta.algorithms.black_box import BlackBox
from jaxmeta.envs import BernoulliBandit


def run(name: str, configs: dict, num_arms: int = 5, repeats: int = 5, steps_per_run: int = 3) -> None:
    env = BernoulliBandit(num_arms=num_arms)
    for label, cfg in configs.items():
        bb = BlackBox(env, env.task_distribution(), cfg)
        # with several devices (e.g. XLA_FLAGS=--xla_force_host_platform_device_count=N)
        # the trials are sharded over a "tasks" mesh of all of them
        mesh_ctx = parallel.use_mesh(parallel.task_mesh() if jax.device_count() > 1 else None)
        mesh_ctx.__enter__()
        state = bb.init(jax.random.PRNGKey(0))
        key = jax.random.PRNGKey(1)
        t0 = time.perf_counter()
        compiled = jax.jit(bb.algorithm().train_step).lower(state, key).compile()
        compile_s = time.perf_counter() - t0
        # Model FLOPs: scan bodies counted `length` times, and the GRU's rematerialised
        # forward (recomputed in the backward pass) not counted, so the rate is honest.
        plain = BlackBox(env, env.task_distribution(), dataclasses.replace(cfg, remat=False)) if hasattr(cfg, "remat") else bb
        flops = fn_flops(plain.algorithm().train_step, state, key)
        state, m = compiled(state, key)  # warm-up
        jax.block_until_ready(m)
        env_steps = int(m["env_steps"]) * steps_per_run
        times = []
        for r in range(repeats):
            keys = jax.random.split(jax.random.PRNGKey(100 + r), steps_per_run)
            t0 = time.perf_counter()
            for k in keys:
                state, m = compiled(state, k)
            jax.block_until_ready((state, m))
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        # The reference product has the model's matmul shape: a GRU's (LSTM's) per-step products
        # are [trials, H] x [H, 3H] ([H, 4H]); SNAIL's dense layers map whole trials to 2 * filters channels.
        if hasattr(cfg, "hidden_size"):
            width, rows = cfg.hidden_size, cfg.num_trials
        else:
            width, rows = 2 * cfg.filters, cfg.num_trials * bb.T // cfg.num_minibatches
        print(json.dumps({
            "benchmark": name,
            "model": label,
            "num_arms": num_arms,
            "episodes_per_trial": cfg.episodes_per_trial,
            "trials_per_step": cfg.num_trials,
            "num_epochs": cfg.num_epochs,
            "num_minibatches": cfg.num_minibatches,
            "outer": cfg.outer,
            **({"cell": cfg.cell, "hidden_size": cfg.hidden_size} if hasattr(cfg, "cell") else
               {"filters": cfg.filters, "num_heads": cfg.num_heads, "key_size": cfg.key_size}),
            "env_steps_per_s": env_steps / med,
            "train_step_s_median": med / steps_per_run,
            "runs": repeats,
            "compile_s": compile_s,
            "train_step_gflop": flops / 1e9,  # model FLOPs, recomputation excluded
            "achieved_gflops": flops * steps_per_run / med / 1e9,
            "matmul_width": width,
            "matmul_rows": rows,
            "matmul_gflops": matmul_gflops(width, rows=rows),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "device_count": jax.device_count(),
            "task_mesh_devices": jax.device_count(),
        }), flush=True)
        mesh_ctx.__exit__(None, None, None)


def main(name: str, configs: dict, argv=None, **run_kwargs) -> None:
    """`run` with `--models a,b`, `--meta-batch-size N` and `--repeats N` from the command
    line (the presets of benchmarks/run.py use them)."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--models", help="comma-separated subset of: " + ",".join(configs))
    p.add_argument("--meta-batch-size", type=int, help="tasks per train step, for every model")
    p.add_argument("--repeats", type=int)
    args = p.parse_args(argv)
    if args.models:
        configs = {k: configs[k] for k in args.models.split(",")}
    if args.meta_batch_size:
        configs = {k: dataclasses.replace(c, meta_batch_size=args.meta_batch_size,
                                          num_minibatches=min(c.num_minibatches, args.meta_batch_size))
                   for k, c in configs.items()}
    if args.repeats:
        run_kwargs["repeats"] = args.repeats
    run(name, configs, **run_kwargs)
