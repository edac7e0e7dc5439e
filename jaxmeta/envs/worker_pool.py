"""Environments stepped by worker processes, for the host simulators (Meta-World, MuJoCo).

`WorkerPool(kind, num_envs, num_workers, kwargs)` holds `num_envs` environments of a
`jaxmeta.envs.host_worker` slice kind: environment i lives in worker i * W // N
(consecutive blocks), or in this process with `num_workers=0`. A worker is the
standalone script `host_worker.py` (numpy and its simulator, no JAX), over a socket, in
its own session: a terminal's Ctrl-C reaches only this process, which finishes the
meta-iteration and checkpoints; workers also ignore SIGINT, and exit when the pool is
closed or this process dies. A worker that dies or fails raises `SimulatorError`
naming it, instead of a hang.

Stepping is either one blocking call over every environment (`call`) or pipelined:
`step_send(rows, action)` starts the given environments and returns at once, and
`step_recv()` answers the sends in order, so the caller computes the next actions of
some environments while the workers step others.
"""
from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

import numpy as np

from jaxmeta.envs.host_worker import SLICES


class SimulatorError(RuntimeError):
    """A simulator worker died, hung or failed; the message names it."""


class WorkerPool:
    """`num_envs` environments of slice `kind` over `num_workers` processes (0: in this one).

    Args:
      kind: a `host_worker.SLICES` key ("metaworld", "mujoco").
      num_envs: environments in the pool.
      num_workers: processes (at most `num_envs`); 0 steps in this process.
      kwargs: the slice's keyword arguments (JSON-serialisable).
      name: what messages call the workers ("Meta-World worker 1 ...").
      timeout_s: most seconds to wait for a worker's answer before raising.
    """

    def __init__(self, kind: str, num_envs: int, num_workers: int, kwargs: dict | None = None,
                 name: str = "simulator", timeout_s: float = 600.0):
        self.num_envs, self.name, self.timeout_s = int(num_envs), name, timeout_s
        kwargs = dict(kwargs or {})
        W = min(int(num_workers), self.num_envs)
        bounds = [i * self.num_envs // max(W, 1) for i in range(max(W, 1) + 1)]
        self.slices = [(bounds[i], bounds[i + 1]) for i in range(max(W, 1))]
        self.local = SLICES[kind](self.num_envs, **kwargs) if W == 0 else None
        self._conns, self._procs = [], []
        self._pending = collections.deque()  # step_send calls not yet answered: (rows, [(worker, positions)])
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_worker.py")
        for s, e in self.slices[:W]:
            ours, theirs = socket.socketpair()
            with theirs:
                proc = subprocess.Popen([sys.executable, script, str(theirs.fileno()), kind, str(e - s),
                                         json.dumps(kwargs)],
                                        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            # the worker's end now lives in the worker only: its death is EOF here
            self._conns.append(Connection(ours.detach()))
            self._procs.append(proc)

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def pipelined(self) -> bool:
        """Whether `step_send` / `step_recv` overlap stepping with the caller (worker processes)."""
        return self.local is None

    # ----------------------------------------------------------------- blocking calls
    def call(self, method: str, per_worker_args: list[tuple]) -> list:
        """`method(*args)` on every worker (args per worker), their answers in order."""
        if self._pending:
            raise SimulatorError(f"{method} called with {len(self._pending)} pipelined steps not yet received")
        if self.local is not None:
            return [getattr(self.local, method)(*per_worker_args[0])]
        for conn, args in zip(self._conns, per_worker_args):
            self._send(conn, method, args)
        return [self._receive(i) for i in range(len(self._conns))]

    def call_split(self, method: str, per_env: list | np.ndarray | None = None, extra: tuple = ()) -> list:
        """`method(per_env[s:e], *extra)` (or `method(*extra)`) on every worker's block."""
        if per_env is None:
            return self.call(method, [tuple(extra)] * len(self.slices))
        return self.call(method, [(per_env[s:e], *extra) for s, e in self.slices])

    def _send(self, conn, method, args):
        try:
            conn.send((method, args))
        except (BrokenPipeError, OSError):
            pass  # reported by the receive, with the exit code

    def _receive(self, i: int):
        conn, proc = self._conns[i], self._procs[i]
        try:
            if not conn.poll(self.timeout_s):
                self.close()
                raise SimulatorError(f"{self.name} worker {i} (pid {proc.pid}) sent no answer in {self.timeout_s:.0f} s")
            status, value = conn.recv()
        except (EOFError, OSError):
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self.close()
            raise SimulatorError(f"{self.name} worker {i} (pid {proc.pid}) died (exit code {code}); "
                                 "the batch it was stepping is lost") from None
        if status == "error":
            self.close()
            raise SimulatorError(f"{self.name} worker {i} (pid {proc.pid}) failed:\n{value}")
        return value

    # ----------------------------------------------------------------- stepping
    def reset(self, seed: int) -> np.ndarray:
        """Every environment reset, environment i seeded with seed + i: obs [N, D]."""
        return np.concatenate(self.call("reset", [(int(seed) + s,) for s, _ in self.slices]))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every environment stepped with its row of `action`: the slice's outputs, concatenated."""
        out = self.call_split("step", action)
        return tuple(np.concatenate(xs) for xs in zip(*out))

    def step_send(self, rows: np.ndarray, action: np.ndarray) -> None:
        """Start stepping the environments `rows` (indices into the pool) with `action`
        [len(rows), ...] and return at once; `step_recv` answers the sends in order."""
        if self.local is not None:
            raise SimulatorError("pipelined stepping needs worker processes (num_workers >= 1)")
        rows = np.asarray(rows)
        parts = []
        for w, (s, e) in enumerate(self.slices):
            sel = np.nonzero((rows >= s) & (rows < e))[0]
            if len(sel):
                self._send(self._conns[w], "step_rows", (rows[sel] - s, action[sel]))
                parts.append((w, sel))
        self._pending.append((len(rows), parts))

    def step_recv(self) -> tuple[np.ndarray, ...]:
        """The slice's outputs for the rows of the oldest `step_send`, in its rows' order."""
        n, parts = self._pending.popleft()
        out = None
        for w, sel in parts:
            got = self._receive(w)
            if out is None:
                out = [np.empty((n,) + np.shape(x)[1:], np.asarray(x).dtype) for x in got]
            for full, x in zip(out, got):
                full[sel] = x
        return tuple(out)

    def busy_s(self) -> list[float]:
        """Seconds each worker (or this process) has spent in its simulator's reset and step."""
        return [float(v) for v in self.call_split("busy")]

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        conns, procs, self._conns, self._procs = self._conns, self._procs, [], []
        self._pending.clear()
        for conn in conns:
            try:
                conn.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for conn in conns:
            conn.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
