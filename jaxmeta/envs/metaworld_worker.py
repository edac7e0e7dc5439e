"""A Meta-World simulator worker: a standalone script that steps environments for
`jaxmeta.envs.metaworld.MetaWorldSimulator` over a socket.

It is started as `python metaworld_worker.py FD` (not as a module of the package), so a
worker imports numpy and metaworld only -- not JAX -- and starts fast and small. It
answers (method, args) messages with ("ok", value) or ("error", traceback), and exits on
("close", ()) or when the parent's end of the socket closes. `EnvSlice` is also the
in-process simulator of `num_workers=0`.
"""
from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any

import numpy as np


class EnvSlice:
    """Consecutive environments of a simulator, stepped in one process. Environment
    instances are kept in a pool per class and reused across task batches."""

    def __init__(self, n: int):
        self.n = n
        self.envs: list[Any] = [None] * n
        self.pool: dict[type, list] = {}

    def set_tasks(self, tasks: list) -> None:
        """One `metaworld.Task` per environment; instances of its class come from the pool."""
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        for e in self.envs:
            if e is not None:
                self.pool.setdefault(type(e), []).append(e)
        for i, task in enumerate(tasks):
            cls = ALL_V3_ENVIRONMENTS[task.env_name]
            free = self.pool.get(cls)
            env = free.pop() if free else cls()
            env.set_task(task)
            self.envs[i] = env

    def reset(self, seed: int) -> np.ndarray:
        """Environment i seeded with seed + i, then reset: obs [n, 39] float64."""
        obs = []
        for i, e in enumerate(self.envs):
            e.seed(int(seed) + i)
            obs.append(e.reset()[0])
        return np.stack(obs)

    def step(self, action: np.ndarray):
        """(obs [n, 39] float64, reward [n] float64, success [n] bool)."""
        obs, reward, success = [], [], []
        for e, a in zip(self.envs, action):
            o, r, _, _, info = e.step(a)
            obs.append(o)
            reward.append(r)
            success.append(bool(info["success"]))
        return np.stack(obs), np.asarray(reward, np.float64), np.asarray(success)


def serve(conn, n: int) -> None:
    """Answer the parent's calls on `conn` until it closes or says "close"."""
    envs = EnvSlice(n)
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if method == "close":
            return
        try:
            conn.send(("ok", getattr(envs, method)(*args)))
        except Exception:  # the parent raises it with this traceback
            conn.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    # Ctrl-C is the parent's to handle (it finishes the meta-iteration and checkpoints);
    # the parent also starts workers in their own session, out of the terminal's group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # run as a script, this folder would come first on sys.path, and its metaworld.py
    # would shadow the metaworld package
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    from multiprocessing.connection import Connection

    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
