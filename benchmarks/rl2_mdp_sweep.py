"""RL^2 learning on random tabular MDPs (RL^2 Table 2's n = 10 setting) under chosen settings.

Each `--set` is one run: a JSON object of `RL2Config` fields (plus "iters", the number of
train steps, default 150) over the base GRU 64, n = 10 episodes, 500 held-out tasks. A run
trains from PRNGKey(0), evaluates on the config's held-out tasks and prints one JSON line:
the settings, the agent's mean trial reward (random play: 100) and the wall seconds.
Progress lines (train metrics every 25 steps) go to stderr.

Run: PYTHONPATH=. python benchmarks/rl2_mdp_sweep.py --set '{"gamma": 0.8}' --set '{"gamma": 0.99}'
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

from jaxmeta import RL2Config, rl2
from jaxmeta.config import ConfigError
from jaxmeta.envs.tabular_mdp import TabularMDP


def run(settings: dict) -> dict:
    settings = dict(settings)
    iters = int(settings.pop("iters", 150))
    env = TabularMDP(10, 5, 10)
    cfg = RL2Config(**{"episodes_per_trial": 10, "hidden_size": 64, "num_eval_tasks": 500, **settings})
    algo = rl2(env, config=cfg)
    state = algo.init(jax.random.PRNGKey(0))

    @jax.jit
    def step(state, key):
        return algo.update(state, algo.sample(state, key))

    key = jax.random.PRNGKey(1)
    t0 = time.time()
    for i in range(iters):
        key, k = jax.random.split(key)
        state, m = step(state, k)
        if i % 25 == 0 or i == iters - 1:
            m = jax.device_get(m)
            print(i, f"{time.time() - t0:.0f}s",
                  " ".join(f"{k}={float(v):.3g}" for k, v in m.items() if k != "env_steps"),
                  file=sys.stderr, flush=True)
    curve = jax.jit(algo.evaluate)(state, jax.random.PRNGKey(7))
    reward = float(jnp.sum(curve.returns))
    return {"benchmark": "rl2_mdp_sweep", "settings": {**settings, "iters": iters},
            "trial_reward": round(reward, 2), "wall_s": round(time.time() - t0, 1),
            "device": jax.devices()[0].device_kind}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="JSON",
                    help="one run's RL2Config fields (and 'iters') as a JSON object; repeat for more runs")
    args = ap.parse_args(argv)
    runs = args.set or ["{}"]
    parsed = []
    for s in runs:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            ap.error(f"--set {s!r} is not JSON: {e}")
        if not isinstance(d, dict):
            ap.error(f"--set {s!r} must be a JSON object of RL2Config fields")
        parsed.append(d)
    for d in parsed:
        try:
            print(json.dumps(run(d)), flush=True)
        except (ConfigError, TypeError) as e:
            ap.error(f"--set {json.dumps(d)}: {e}")


if __name__ == "__main__":
    main()
