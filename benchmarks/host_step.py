"""The learner's own time per step of a host collection, with a simulator that costs nothing.

`HostCollector.episodes` over a null simulator (observations drawn by NumPy, no physics)
and a 64 x 64 tanh Gaussian policy on Meta-World's shapes (39 observations, 4 actions):
what is left is what the learner process spends at every step besides the simulator
(the jitted policy call, the transfers to and from the device, the bookkeeping). It sets
the floor of the learner overhead in `benchmarks/metaworld.py`. One JSON line per mode
(blocking; pipelined: the two halves of the tasks alternate) with the median over
`--repeats` collections of microseconds per step and per policy call.

    python benchmarks/host_step.py --tasks 20 --episodes 10 --horizon 500 --repeats 5

`PYTHONPATH=<another checkout> python benchmarks/host_step.py` measures that checkout's
collector with the same script, for a ratio within one session.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import distrax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_info, emit, median_time  # noqa: E402

from jaxmeta.envs.base import Box  # noqa: E402
from jaxmeta.host import HostCollector  # noqa: E402

OBS, ACT = 39, 4


class NullSim:
    """`num_envs` environments whose step is a NumPy draw (no physics)."""

    def __init__(self, num_envs: int, pipelined: bool):
        self.num_envs, self.pipelined = num_envs, pipelined
        self.rng = np.random.default_rng(0)
        self.sent = collections.deque()

    def set_tasks(self, tasks):
        pass

    def reset(self, seed):
        return self.rng.standard_normal((self.num_envs, OBS))

    def step(self, action):
        n = len(action)
        return self.rng.standard_normal((n, OBS)), np.zeros(n), np.zeros(n, bool)

    def step_send(self, rows, action):
        self.sent.append(self.step(action))

    def step_recv(self):
        return self.sent.popleft()


def policy_act(params, obs, key):
    h = jnp.tanh(jnp.tanh(obs @ params["w1"]) @ params["w2"])
    mean = h @ params["w3"]
    dist = distrax.MultivariateNormalDiag(mean, jnp.exp(params["log_std"]) * jnp.ones_like(mean))
    return dist.sample_and_log_prob(seed=key)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--horizon", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w1": 0.1 * jax.random.normal(ks[0], (OBS, 64)), "w2": 0.1 * jax.random.normal(ks[1], (64, 64)),
              "w3": 0.1 * jax.random.normal(ks[2], (64, ACT)), "log_std": jnp.zeros(ACT)}
    env = SimpleNamespace(horizon=args.horizon, action_space=Box(-1.0, 1.0, (ACT,)))
    keys = jax.random.split(jax.random.PRNGKey(1), args.tasks)
    tasks = jnp.zeros((args.tasks, 1))
    import jaxmeta

    where = os.path.dirname(os.path.dirname(os.path.abspath(jaxmeta.__file__)))
    try:  # the measured checkout: its commit, "+" if it has changes
        git = lambda *a: subprocess.run(["git", "-C", where, *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
        rev = git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")
    except OSError:
        rev = ""
    for pipelined in (False, True):
        collector = HostCollector(env, lambda n, pl=pipelined: NullSim(n, pl))
        run = lambda: collector.episodes(policy_act, params, tasks, keys, args.episodes)  # noqa: E731
        t0 = time.perf_counter()
        jax.block_until_ready(run())  # compiles the collector's pieces
        first = time.perf_counter() - t0
        med, times = median_time(run, args.repeats)
        calls = args.horizon * (2 if pipelined else 1)
        emit({"benchmark": "host_step", "mode": "pipelined" if pipelined else "blocking",
              "jaxmeta": rev or where, "tasks": args.tasks, "episodes": args.episodes, "horizon": args.horizon,
              "us_per_step": round(med / args.horizon * 1e6, 1), "us_per_policy_call": round(med / calls * 1e6, 1),
              "s_per_collection": round(med, 4), "runs_s": [round(t, 4) for t in times],
              "first_collection_s": round(first, 2), **device_info()})


if __name__ == "__main__":
    main()
