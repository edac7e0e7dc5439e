"""Shared driver of the black-box meta-RL benchmarks (one JSON line per measurement)."""
from __future__ import annotations

import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp

from jaxmeta.algorithms.black_box import BlackBox
from jaxmeta.envs import BernoulliBandit


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def matmul_gflops(width: int, repeats: int = 5) -> float:
    """GFLOP/s of a float32 [width x width] matmul chain, timed in this process."""
    n = 32  # chained products so the timing is not dominated by dispatch
    a = jax.random.normal(jax.random.PRNGKey(0), (width, width), jnp.float32) / jnp.sqrt(width)

    @jax.jit
    def f(x):
        def body(x, _):
            return jnp.tanh(x @ a), None
        return jax.lax.scan(body, x, None, length=n)[0]

    x = jax.random.normal(jax.random.PRNGKey(1), (max(width, 256), width), jnp.float32)
    jax.block_until_ready(f(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - t0)
    return 2.0 * x.shape[0] * width * width * n / statistics.median(times) / 1e9


def run(name: str, configs: dict, num_arms: int = 5, repeats: int = 5, steps_per_run: int = 3) -> None:
    env = BernoulliBandit(num_arms=num_arms)
    for label, cfg in configs.items():
        bb = BlackBox(env, env.task_distribution(), cfg)
        state = bb.init(jax.random.PRNGKey(0))
        key = jax.random.PRNGKey(1)
        t0 = time.perf_counter()
        compiled = jax.jit(bb.train_step).lower(state, key).compile()
        compile_s = time.perf_counter() - t0
        flops = _flops(compiled)
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
        width = getattr(cfg, "hidden_size", None) or getattr(cfg, "filters", 64)
        print(json.dumps({
            "benchmark": name,
            "model": label,
            "num_arms": num_arms,
            "episodes_per_trial": cfg.episodes_per_trial,
            "trials_per_step": cfg.num_trials,
            "num_epochs": cfg.num_epochs,
            "num_minibatches": cfg.num_minibatches,
            "env_steps_per_s": env_steps / med,
            "train_step_s_median": med / steps_per_run,
            "runs": repeats,
            "compile_s": compile_s,
            "train_step_gflop": flops / 1e9,
            "achieved_gflops": flops * steps_per_run / med / 1e9,
            "flops_note": "XLA cost_analysis counts each while-loop (scan) body once, so this undercounts",
            "matmul_width": width,
            "matmul_gflops": matmul_gflops(width),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "device_count": jax.device_count(),
        }), flush=True)
