"""Wall time of S vmapped seeds against one seed, per meta-iteration, in one process.

MAML-TRPO on 2D navigation and RL^2 on a 5-armed bandit, each as the driver runs them
(`jaxmeta train ... --seeds S` jits `vmap(train_step)` over the whole training state).
Prints one JSON line per algorithm with both timings and their ratio (ideal: 1.0 on an
accelerator with room to spare, S on a saturated CPU).

    python benchmarks/seeds_vmap.py [--seeds 8] [--preset cpu|gpu] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from common import device_info, emit, median_time, peak_memory_mb  # noqa: E402
from jaxmeta import envs  # noqa: E402
from jaxmeta.algorithms import MAMLConfig, RL2Config, maml, rl2, vmap_algorithm  # noqa: E402
from jaxmeta.driver.seeds import seed_keys  # noqa: E402

PRESETS = {
    "cpu": {
        "maml_navigation": (lambda: envs.make("navigation2d"), maml, MAMLConfig(meta_batch_size=10, num_episodes=10)),
        "rl2_bandit": (lambda: envs.make("bandit", num_arms=5), rl2,
                       RL2Config(episodes_per_trial=10, hidden_size=64, meta_batch_size=64, num_minibatches=1, num_epochs=1)),
    },
    "gpu": {
        "maml_navigation": (lambda: envs.make("navigation2d"), maml, MAMLConfig()),
        "rl2_bandit": (lambda: envs.make("bandit", num_arms=5), rl2,
                       RL2Config(episodes_per_trial=100, hidden_size=256, meta_batch_size=256)),
    },
}


def measure(name, make_env, factory, config, num_seeds, repeats):
    algo = factory(make_env(), config=config)
    out = {}
    for S in (1, num_seeds):
        keys = seed_keys(0, S)
        if S == 1:
            init, step, k = jax.jit(algo.init), jax.jit(algo.train_step), keys[0]
        else:
            batched = vmap_algorithm(algo)
            init, step, k = jax.jit(batched.init), jax.jit(batched.train_step), keys
        state = init(k)
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, k))  # compile + first iteration
        out[S] = {"first_s": time.perf_counter() - t0}
        state, _ = jax.block_until_ready(step(state, k))

        def one():
            nonlocal state
            state, m = step(state, k)
            return m

        out[S]["s_per_it"], out[S]["all"] = median_time(one, repeats)
    return {
        "benchmark": "seeds_vmap",
        "algorithm": name,
        "num_seeds": num_seeds,
        "s_per_meta_iteration_1_seed": out[1]["s_per_it"],
        f"s_per_meta_iteration_{num_seeds}_seeds": out[num_seeds]["s_per_it"],
        "ratio": out[num_seeds]["s_per_it"] / out[1]["s_per_it"],
        "compile_plus_first_s": {str(s): v["first_s"] for s, v in out.items()},
        **peak_memory_mb(),
        **device_info(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", help="comma-separated subset of: " + ",".join(PRESETS["cpu"]))
    args = p.parse_args(argv)
    for name, (make_env, factory, config) in PRESETS[args.preset].items():
        if args.only and name not in args.only.split(","):
            continue
        emit({**measure(name, make_env, factory, config, args.seeds, args.repeats), "preset": args.preset,
              "config": {k: getattr(config, k) for k in ("meta_batch_size",) + (("num_episodes",) if hasattr(config, "num_episodes") else ("episodes_per_trial", "hidden_size"))}})


if __name__ == "__main__":
    main()
