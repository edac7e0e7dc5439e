"""A host simulator worker: a standalone script that steps environments for
`jaxmeta.envs.worker_pool.WorkerPool` over a socket.

It is started as `python host_worker.py FD KIND N ARGS` (not as a module of the
package), so a worker imports numpy and its simulator only -- not JAX -- and starts fast
and small. KIND is "metaworld" (`MetaWorldSlice`) or "mujoco" (`MujocoSlice`), N the
number of environments it holds and ARGS a JSON object of the slice's keyword
arguments. It answers (method, args) messages with ("ok", value) or ("error",
traceback), and exits on ("close", ()) or when the parent's end of the socket closes.
The slices are also the in-process simulators of `num_workers=0`.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from typing import Any

import numpy as np


class _Slice:
    """Consecutive environments of a simulator, stepped in one process, with the
    seconds spent in the simulator's own reset and step (`busy`)."""

    def __init__(self, n: int):
        self.n = n
        self.busy_s = 0.0

    def busy(self) -> float:
        """Seconds this slice has spent in its simulator's reset and step so far."""
        return self.busy_s

    def step(self, action: np.ndarray):
        """Step every environment of the slice (see `step_rows`)."""
        return self.step_rows(np.arange(self.n), action)

    def step_rows(self, rows: np.ndarray, action: np.ndarray):
        t0 = time.perf_counter()
        out = self._step_rows(rows, action)
        self.busy_s += time.perf_counter() - t0
        return out

    def reset(self, seed: int) -> np.ndarray:
        """Environment i seeded with seed + i, then reset: obs [n, D]."""
        t0 = time.perf_counter()
        obs = np.stack([self._reset(i, int(seed) + i) for i in range(self.n)])
        self.busy_s += time.perf_counter() - t0
        return obs


class MetaWorldSlice(_Slice):
    """Meta-World environments; instances are kept in a pool per class and reused
    across task batches."""

    def __init__(self, n: int):
        super().__init__(n)
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

    def _reset(self, i: int, seed: int) -> np.ndarray:
        self.envs[i].seed(seed)
        return self.envs[i].reset()[0]

    def _step_rows(self, rows, action):
        """(obs [len(rows), 39] float64, reward [len(rows)] float64, success [len(rows)] bool)."""
        obs, reward, success = [], [], []
        for i, a in zip(rows, action):
            o, r, _, _, info = self.envs[int(i)].step(a)
            obs.append(o)
            reward.append(r)
            success.append(bool(info["success"]))
        return np.stack(obs), np.asarray(reward, np.float64), np.asarray(success)


class MujocoSlice(_Slice):
    """gymnasium MuJoCo locomotion environments (HalfCheetah-v5, Ant-v5): the physics of
    `jaxmeta.envs.mujoco.MujocoLocomotion`; the task reward is computed by the caller
    from the torso positions this returns."""

    def __init__(self, n: int, gym_id: str, gym_kwargs: dict):
        super().__init__(n)
        import gymnasium as gym
        import mujoco

        self._mujoco = mujoco
        self.envs = [gym.make(gym_id, **gym_kwargs).unwrapped for _ in range(n)]
        self._torso = [e.data.body("torso") for e in self.envs]

    def info(self) -> dict:
        """The control step and the spaces' sizes."""
        e = self.envs[0]
        return {"dt": float(e.dt), "obs_dim": int(e.observation_space.shape[0]),
                "act_dim": int(e.action_space.shape[0])}

    def _reset(self, i: int, seed: int) -> np.ndarray:
        return self.envs[i].reset(seed=seed)[0]

    def _step_rows(self, rows, action):
        """(obs [len(rows), D] float64, torso position before [len(rows), 3], after [len(rows), 3])."""
        obs, pos0, pos = [], [], []
        for i, a in zip(rows, action):
            e, torso = self.envs[int(i)], self._torso[int(i)]
            pos0.append(np.array(torso.xpos))
            e.do_simulation(a, e.frame_skip)
            # mj_step leaves body positions at the pre-integration state; refresh them
            self._mujoco.mj_kinematics(e.model, e.data)
            pos.append(np.array(torso.xpos))
            obs.append(e._get_obs())
        return np.stack(obs), np.stack(pos0), np.stack(pos)


SLICES = {"metaworld": MetaWorldSlice, "mujoco": MujocoSlice}


def serve(conn, envs) -> None:
    """Answer the parent's calls on `conn` until it closes or says "close"."""
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
    # run as a script, this folder would come first on sys.path, and its metaworld.py and
    # mujoco.py would shadow the metaworld and mujoco packages
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    from multiprocessing.connection import Connection

    fd, kind, n, kwargs = sys.argv[1:5]
    conn = Connection(int(fd))
    try:
        envs = SLICES[kind](int(n), **json.loads(kwargs))
    except Exception:  # reported to the parent on its first call
        failure = traceback.format_exc()
        method, _ = conn.recv()
        conn.send(("error", failure))
        sys.exit(1)
    serve(conn, envs)
