"""Host collector: CPU simulators stepped outside jit, feeding any learner.

Some simulators (native MuJoCo through gymnasium, Meta-World) cannot run inside XLA.
`HostCollector` implements the `jaxmeta.rollout.Collector` protocol on them: the
simulator steps a batch of environments (one task per environment) in Python, the
policy acts on the whole batch at every step as one jitted function, and the result is
the very arrays the jitted rollouts return (`Trajectory` / `TrialTrajectory` with leaves
[M, T, E, ...]). Learners call the collector's `episodes` / `trials` and run their
processing through `stage`, so MAML, ProMP, RL^2 and SNAIL run on a host simulator with
no code of their own for it.

The per-task keys are consumed as the jitted rollouts consume them (the same action
keys at every step), and the simulators' initial-state noise is seeded from them, so a
host batch is a pure function of its keys and the simulator.

A host simulator provides:

    num_envs: int
    observation_space, action_space
    set_tasks(tasks)            # a task pytree with leading axis num_envs (numpy)
    reset(seed) -> obs [N, D]   # env i seeded with seed + i
    step(action [N, ...]) -> (obs [N, D], reward [N], terminated [N])
    reports_success: bool       # optional (default False); when True, `step` returns a
                                # fourth array, success [N] (the step succeeded), which
                                # the collector records as the batch's `success` field

This module and the simulators are the one place in the library that compiles for the
caller: the loop around the policy is Python, so its pieces are compiled with
`jax.jit` when first used, once per collector.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta import envs
from jaxmeta.envs.base import Discrete
from jaxmeta.rollout import ActFn, TrialActFn, TrialTrajectory, trial_inputs
from jaxmeta.types import Params, PRNGKey, Task, Trajectory


class HostSimulator(Protocol):
    """A batch of `num_envs` environments stepped on the host (see the module docstring)."""

    num_envs: int

    def set_tasks(self, tasks: Task) -> None: ...

    def reset(self, seed: int) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, ...]: ...


def _float_dtype(params) -> np.dtype:
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return np.dtype(leaves[0].dtype) if leaves else np.dtype(np.float32)


def _seed(key: PRNGKey) -> int:
    """A simulator seed drawn from a key (for the initial-state noise)."""
    return int(jax.random.randint(key, (), 0, 2**30))


def _host_keys(keys) -> np.ndarray:
    """Per-step keys [T, ...] as one host array, read once: indexing it at every step
    costs nothing, where indexing a device array is one dispatch per step
    (`benchmarks/host_step.py`: with this and one transfer per policy call, a policy call
    costs 0.6x what it did; docs/benchmarks.md)."""
    return np.asarray(keys)


def _tree_rows(tree, start: int, stop: int):
    return jax.tree.map(lambda x: x[start:stop], tree)


def _sim_step(sim: HostSimulator, action: np.ndarray):
    """(obs, reward, terminated, success or None) from a simulator's step."""
    out = sim.step(action)
    return (*out, None) if not getattr(sim, "reports_success", False) else out


def _stack(rec: dict, cls):
    """The recorded steps as `cls` arrays [M, T, E, ...]; fields never recorded stay None."""
    return cls(**{k: jnp.asarray(np.stack(v, axis=1)) for k, v in rec.items() if v})


class HostCollector:
    """`Collector` over a host simulator.

    Args:
      env: the task environment (spaces, horizon, task distribution, reward); the
        simulator runs its physics.
      make_sim: num_envs -> a `HostSimulator` holding that many environments; one is
        made per batch size and kept.
      max_envs: most environments stepped at once; larger batches of tasks run in
        consecutive chunks of whole tasks (None: no limit).
    """

    jittable = False

    def __init__(self, env: Any, make_sim: Callable[[int], HostSimulator], max_envs: int | None = None):
        self.env = env
        self._make_sim = make_sim
        self.max_envs = max_envs
        self._sims: dict[int, HostSimulator] = {}
        self._jitted: dict[Any, Callable] = {}
        self._plans: dict[bytes, tuple[int, np.ndarray]] = {}  # see `prepare`

    # ----------------------------------------------------------------- plumbing
    def stage(self, fn: Callable, static_argnames: tuple[str, ...] = ()) -> Callable:
        """`fn` compiled once (by `jax.jit`) for this collector; `fn` must be hashable
        and compare equal across calls (a function or a bound method of a frozen object)."""
        key = (fn, static_argnames)
        if key not in self._jitted:
            self._jitted[key] = jax.jit(fn, static_argnames=static_argnames)
        return self._jitted[key]

    def sim(self, num_envs: int) -> HostSimulator:
        """The simulator holding `num_envs` environments (made on first use)."""
        if num_envs not in self._sims:
            self._sims[num_envs] = self._make_sim(num_envs)
        return self._sims[num_envs]

    def close(self) -> None:
        """Close the simulators that hold resources (worker processes); idempotent."""
        sims, self._sims = self._sims, {}
        for sim in sims.values():
            if hasattr(sim, "close"):
                sim.close()

    def _chunks(self, num_tasks: int, per_task: int) -> list[tuple[int, int]]:
        size = num_tasks if self.max_envs is None else max(1, min(num_tasks, self.max_envs // per_task))
        return [(s, min(s + size, num_tasks)) for s in range(0, num_tasks, size)]

    def _set_tasks(self, sim: HostSimulator, tasks: Task, per_task: int) -> None:
        sim.set_tasks(jax.tree.map(lambda x: np.repeat(np.asarray(x), per_task, axis=0), tasks))

    # ----------------------------------------------------------------- episodes
    def prepare(self, keys: PRNGKey, num_episodes: int) -> None:
        """Derive now the simulator seeds and per-step action keys of a later
        `episodes(..., keys, num_episodes)` call.

        A learner calls this for all its collections before it dispatches work between
        them (MAML's inner step): JAX runs dispatched computations in order, so a key
        derived after the inner step was dispatched waits for it, and the simulator
        with it. Prepared, the later collection sets the tasks and resets the simulator
        at once, while the inner step runs. It changes no value; `keys` must be
        computed already (the host reads them).
        """
        host = np.asarray(keys)
        for start, stop in self._chunks(len(host), num_episodes):
            chunk = host[start:stop]
            self._plans[chunk.tobytes()] = self._plan(chunk)
        while len(self._plans) > 64:  # prepared and never collected: forget the oldest
            self._plans.pop(next(iter(self._plans)))

    def _plan(self, keys) -> tuple[int, np.ndarray]:
        """(reset seed, per-step action keys [H, M, 2] on the host) of a chunk's keys."""
        k_reset, act_keys = self.stage(_episode_keys, ("horizon",))(keys, horizon=self.env.horizon)
        return _seed(k_reset[0]), _host_keys(act_keys)

    def episodes(self, act: ActFn, params: Params, tasks: Task, keys: PRNGKey, num_episodes: int,
                 params_axis: int | None = None) -> Trajectory:
        """E episodes of each task, as `jax.vmap(rollout_episodes)` returns them: [M, T, E, ...]."""
        host_keys = np.asarray(keys)  # tasks and keys are sliced on the host: nothing waits on the device
        host_tasks = jax.tree.map(np.asarray, tasks)
        M = len(host_keys)
        parts = []
        for start, stop in self._chunks(M, num_episodes):
            p = params if params_axis is None or (start, stop) == (0, M) else _tree_rows(params, start, stop)
            parts.append(self._episodes(act, p, _tree_rows(host_tasks, start, stop), host_keys[start:stop],
                                        num_episodes, params_axis))
        return parts[0] if len(parts) == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

    def _episodes(self, act, params, tasks, keys, E, params_axis) -> Trajectory:
        M, H = len(keys), self.env.horizon
        dtype = _float_dtype(params)
        sim = self.sim(M * E)
        self._set_tasks(sim, tasks, E)
        plan = self._plans.pop(keys.tobytes(), None)
        seed, act_keys = plan if plan is not None else self._plan(keys)  # [H, M, 2]
        obs = sim.reset(seed).reshape(M, E, -1)
        step = self.stage(_EpisodeStep(act, params_axis))
        if getattr(sim, "pipelined", False) and M >= 2:
            return self._pipelined_episodes(sim, step, params, params_axis, obs, act_keys, E, dtype)
        alive = np.ones((M, E), dtype)
        rec = {k: [] for k in Trajectory._fields}
        for t in range(H):
            obs = obs.astype(dtype)  # a copy: the record never aliases a simulator's buffer
            action, log_prob = _host_step(step(params, obs, act_keys[t]))
            next_obs, reward, terminated, success = _sim_step(sim, action.reshape((M * E,) + action.shape[2:]))
            if success is not None:
                rec["success"].append(success.reshape(M, E).astype(dtype) * alive)
            rec["obs"].append(obs)
            rec["action"].append(action)
            rec["reward"].append(reward.reshape(M, E).astype(dtype) * alive)
            rec["valid"].append(alive.copy())
            rec["log_prob"].append(log_prob)
            alive = alive * (1.0 - terminated.reshape(M, E).astype(dtype))
            obs = next_obs.reshape(M, E, -1)
        return _stack(rec, Trajectory)

    def _pipelined_episodes(self, sim, step, params, params_axis, obs, act_keys, E, dtype) -> Trajectory:
        """`_episodes` with the policy of one half of the tasks computed while the
        simulator steps the other half (`sim.step_send` / `step_recv`).

        The halves are the even and the odd tasks, whatever the number of workers, so
        every worker (a block of consecutive environments) has work queued at all times
        and the episodes do not depend on the number of workers. The policy of a task
        sees the same params, observation and key as in one call over all tasks.
        """
        M, H = obs.shape[0], self.env.horizon
        groups = [np.arange(0, M, 2), np.arange(1, M, 2)]
        rows = [(g[:, None] * E + np.arange(E)).reshape(-1) for g in groups]  # env indices, task-major
        group_params = [params if params_axis is None else jax.tree.map(lambda x, g=g: x[g], params) for g in groups]
        group_keys = [act_keys[:, g] for g in groups]  # [H, len(g), 2]
        reports_success = getattr(sim, "reports_success", False)
        alive = np.ones((M, E), dtype)
        fields = ("obs", "action", "reward", "valid", "log_prob") + (("success",) if reports_success else ())
        rec: dict[str, list] = {k: [None] * H for k in fields}
        for t in range(H):
            rec["obs"][t] = np.zeros(obs.shape, dtype)
            rec["reward"][t], rec["valid"][t], rec["log_prob"][t] = (np.zeros((M, E), dtype) for _ in range(3))
            if reports_success:
                rec["success"][t] = np.zeros((M, E), dtype)

        def launch(i, t):  # group i's actions at step t, sent to the simulator
            g = groups[i]
            rec["obs"][t][g], rec["valid"][t][g] = obs[g], alive[g]
            action, log_prob = _host_step(step(group_params[i], obs[g].astype(dtype, copy=False), group_keys[i][t]))
            if rec["action"][t] is None:
                rec["action"][t] = np.zeros((M,) + action.shape[1:], action.dtype)
            rec["action"][t][g], rec["log_prob"][t][g] = action, log_prob
            sim.step_send(rows[i], action.reshape((len(g) * E,) + action.shape[2:]))

        for i in range(2):
            launch(i, 0)
        for t in range(H):
            for i, g in enumerate(groups):
                next_obs, reward, terminated, *success = sim.step_recv()  # success: reported or not
                valid = rec["valid"][t][g]
                rec["reward"][t][g] = reward.reshape(len(g), E).astype(dtype) * valid
                if reports_success:
                    rec["success"][t][g] = success[0].reshape(len(g), E).astype(dtype) * valid
                alive[g] = alive[g] * (1.0 - terminated.reshape(len(g), E).astype(dtype))
                obs[g] = next_obs.reshape(len(g), E, -1)
                if t + 1 < H:
                    launch(i, t + 1)
        return _stack(rec, Trajectory)

    # ----------------------------------------------------------------- trials
    def trials(self, act: TrialActFn, carry: Any, params: Params, tasks: Task, keys: PRNGKey,
               num_episodes: int, num_trials: int) -> TrialTrajectory:
        """E trials of n episodes of each task, as `jax.vmap(rollout_trials)` returns them."""
        M = int(np.shape(keys)[0])
        parts = [
            self._trials(act, carry, params, _tree_rows(tasks, s, e), keys[s:e], num_episodes, num_trials)
            for s, e in self._chunks(M, num_trials)
        ]
        return parts[0] if len(parts) == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

    def _trials(self, act, carry, params, tasks, keys, n, E) -> TrialTrajectory:
        M, H = int(np.shape(keys)[0]), self.env.horizon
        T = n * H
        dtype = _float_dtype(params)
        sim = self.sim(M * E)
        self._set_tasks(sim, tasks, E)
        k_reset, act_keys = self.stage(_trial_keys, ("length",))(keys, length=T)  # [M, 2], [T, M, 2]
        act_keys = _host_keys(act_keys)
        step = self.stage(_TrialStep(act, self.env))
        carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (M,) + c.shape), carry)
        space = self.env.action_space
        if isinstance(space, Discrete):
            prev_action = np.full((M, E), -1, jax.dtypes.canonicalize_dtype(jnp.int64))
        else:
            prev_action = np.zeros((M, E) + tuple(space.shape), dtype)
        prev_reward = np.zeros((M, E), dtype)
        prev_done = np.zeros((M, E), dtype)
        seed = _seed(k_reset[0])
        rec = {k: [] for k in TrialTrajectory._fields}
        for t in range(T):
            h = t % H
            if h == 0:  # a new episode of every trial: the memory is kept, the simulator reset
                obs = sim.reset(seed + (t // H) * sim.num_envs).reshape(M, E, -1)
                alive = np.ones((M, E), dtype)
            carry, *out = step(params, carry, obs.astype(dtype, copy=False), prev_action, prev_reward, prev_done,
                               act_keys[t])
            action, log_prob, value, x = jax.device_get(out)  # one transfer; the memory stays on the device
            next_obs, reward, terminated, success = _sim_step(sim, action.reshape((M * E,) + action.shape[2:]))
            if success is not None:
                rec["success"].append(success.reshape(M, E).astype(dtype) * alive)
            reward = reward.reshape(M, E).astype(dtype) * alive
            terminated = terminated.reshape(M, E).astype(dtype) * alive
            last = np.full((M, E), float(h == H - 1), dtype)
            rec["inputs"].append(x)
            rec["action"].append(action)
            rec["reward"].append(reward)
            rec["valid"].append(alive.copy())
            rec["done"].append(last)
            rec["log_prob"].append(log_prob)
            rec["value"].append(value)
            alive = alive - terminated
            prev_action, prev_reward, prev_done = action, reward, np.maximum(last, terminated)
            obs = next_obs.reshape(M, E, -1)
        return _stack(rec, TrialTrajectory)


def make_collector(env: Any, simulator: str, max_envs: int | None = None) -> HostCollector:
    """A `HostCollector` running `env` on the named host simulator (see
    `jaxmeta.envs.HOST_SIMULATORS`)."""
    return HostCollector(env, lambda n: envs.host_simulator(simulator, env, n), max_envs)


# --------------------------------------------------------------------------- jitted pieces
# Module-level functions and frozen dataclasses, so `HostCollector.stage` compiles each
# once per collector (they compare equal across calls).


def _episode_keys(keys, horizon: int):
    """The reset key and the per-step action keys of `rollout_episodes`, per task."""

    def one(key):
        k_reset, k_steps = jax.random.split(key)
        act = jax.vmap(lambda k: jax.random.split(k)[0])(jax.random.split(k_steps, horizon))
        return k_reset, act

    k_reset, act = jax.vmap(one)(keys)  # [M, 2], [M, H, 2]
    return k_reset, jnp.swapaxes(act, 0, 1)


def _trial_keys(keys, length: int):
    """The reset key and the per-step action keys of `rollout_trials`, per task."""

    def one(key):
        k_reset, k_steps = jax.random.split(key)
        act = jax.vmap(lambda k: jax.random.split(k, 3)[0])(jax.random.split(k_steps, length))
        return k_reset, act

    k_reset, act = jax.vmap(one)(keys)  # [M, 2], [M, T, 2]
    return k_reset, jnp.swapaxes(act, 0, 1)


@dataclass(frozen=True)
class _EpisodeStep:
    """(params, obs [M, E, D], keys [M]) -> (action [M, E, ...], log_prob [M, E]), packed
    as one array [M, E, A + 1] when the actions are vectors of log_prob's float type, so
    that `_host_step` reads a step in one transfer (the values are the same)."""

    act: ActFn
    params_axis: int | None

    def __call__(self, params, obs, keys):
        action, log_prob = jax.vmap(self.act, in_axes=(self.params_axis, 0, 0))(params, obs, keys)
        if action.dtype == log_prob.dtype and action.ndim == log_prob.ndim + 1:
            return jnp.concatenate([action, log_prob[..., None]], axis=-1)
        return action, log_prob


def _host_step(out) -> tuple[np.ndarray, np.ndarray]:
    """(action, log_prob) on the host from an `_EpisodeStep` output, packed or not."""
    if isinstance(out, tuple):
        return jax.device_get(out)
    out = np.asarray(out)
    return out[..., :-1], out[..., -1]


@dataclass(frozen=True)
class _TrialStep:
    """One step of every trial: the policy inputs, then the acting function, per task."""

    act: TrialActFn
    env: Any

    def __call__(self, params, carry, obs, prev_action, prev_reward, prev_done, keys):
        def one(carry, obs, pa, pr, pd, key):
            x = trial_inputs(self.env, obs, pa, pr, pd)
            carry, action, log_prob, value = self.act(params, carry, x, key)
            return carry, action, log_prob, value, x

        return jax.vmap(one)(carry, obs, prev_action, prev_reward, prev_done, keys)
