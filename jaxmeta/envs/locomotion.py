"""Locomotion meta-tasks on Brax: HalfCheetahVel/Dir (Finn et al. 2017), AntDir/AntGoal.

The physics is Brax's `halfcheetah` and `ant` systems; the task (target velocity,
direction, goal) is data passed to `reset`/`step`, so a batch of tasks is a `jax.vmap`
axis and every rollout is one XLA program. Brax is imported lazily, when an environment
is first stepped or its spaces are asked for, so `import jaxmeta` works without it.

Rewards follow the published task code:

- HalfCheetahVel (pytorch-maml-rl `HalfCheetahVelEnv`): target velocity v* ~ U[0, 2];
  r = -|v_x - v*| - 0.05 |a|^2, with v_x the torso's forward velocity over the step.
- HalfCheetahDir (pytorch-maml-rl `HalfCheetahDirEnv`): direction d in {-1, +1};
  r = d v_x - 0.05 |a|^2.
- AntDir (ProMP `AntRandDirec2DEnv`; `directions="forward_backward"` is ProMP's
  `AntRandDirecEnv`): a unit direction u uniform on the circle (or (+-1, 0));
  r = u . v_xy - 0.5 |a|^2 - contact + 1 (survive bonus); the episode terminates when
  the torso height leaves [healthy_z_min, healthy_z_max] ([0, 1] in ProMP).
- AntGoal (ProMP `AntRandGoalEnv`): goal g uniform in the disc of radius 3;
  r = -|p_xy - g|_1 - 0.1 |a|^2 - contact, no termination, no survive bonus.

Deviations, on purpose: the action is clipped to the actuators' range [-1, 1] before it
reaches the simulator and the control cost (pytorch-maml-rl / ProMP charge the raw
Gaussian sample); Brax's generalized/spring/positional pipelines expose no external
contact forces (`cfrc_ext`), so the Ant contact cost is 0 (Brax's own Ant does the
same). Observations are Brax's: joint positions without the root's x (and y for the
Ant), then joint velocities -- the same layout as gymnasium's HalfCheetah-v5, so the
MuJoCo host adapter (`jaxmeta.envs.host`) sees identical observations. The initial
state is Brax's: positions + U[-0.1, 0.1], velocities + 0.1 N(0, 1).

Backends (`backend=`): "generalized" (the default) integrates the MJCF model with
MuJoCo's timestep (0.01 s x 5 frames) and gears, so Brax and the native MuJoCo host path
run the same task; "spring" and "positional" change the model (timesteps, gears) and are
faster on a CPU, for debugging; "mjx" is MuJoCo's own JAX port. Their measured speeds
are in docs/benchmarks.md ("Brax backends").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import ConfigError, check_choice, check_float, check_int
from jaxmeta.envs.base import Box, TaskDistribution
from jaxmeta.types import TimeStep

BACKENDS = ("generalized", "positional", "spring", "mjx")
DEFAULT_BACKEND = "generalized"

_BRAX_CACHE: dict[tuple[str, str], Any] = {}


def brax_env(name: str, backend: str):
    """(Brax environment `name` on `backend`, its dt), built once per process (imports brax)."""
    key = (name, backend)
    if key not in _BRAX_CACHE:
        try:
            from brax import envs as brax_envs
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "Brax locomotion tasks need the `brax` extra: pip install 'jaxmeta[brax]'"
            ) from e
        import warnings

        # build (and read dt) eagerly even when first called under a trace
        with warnings.catch_warnings(), jax.ensure_compile_time_eval():
            warnings.simplefilter("ignore")
            env = brax_envs.get_environment(name, backend=backend)
            _BRAX_CACHE[key] = (env, float(env.dt))
    return _BRAX_CACHE[key]


class VelTask(NamedTuple):
    velocity: jax.Array  # [] target forward velocity


class DirTask(NamedTuple):
    direction: jax.Array  # [] +1 forward, -1 backward


class AntDirTask(NamedTuple):
    direction: jax.Array  # [2] unit vector in the ground plane


class GoalTask(NamedTuple):
    goal: jax.Array  # [2] goal position in the ground plane


class LocoState(NamedTuple):
    pipeline: Any  # brax pipeline state
    t: jax.Array  # [] int32 steps taken


def _check_ant_health(env) -> None:
    check_float("survive_reward", env.survive_reward, -1e3, 1e3)
    check_float("healthy_z_min", env.healthy_z_min, -10.0, 10.0)
    check_float("healthy_z_max", env.healthy_z_max, -10.0, 10.0)
    if not env.healthy_z_max > env.healthy_z_min:
        raise ConfigError("healthy_z_max must be greater than healthy_z_min", "healthy_z_max")


def _check_common(env) -> None:
    check_int("horizon", env.horizon, 1, 100_000)
    check_int("num_workers", getattr(env, "num_workers", 0), 0, 256)
    check_choice("backend", env.backend, BACKENDS)
    check_float("ctrl_cost_weight", env.ctrl_cost_weight, 0.0, 1e3)


@dataclass(frozen=True)
class _BraxLocomotion:
    """Shared machinery: the Brax system, reset, physics step, observation."""

    _brax_name = ""
    _root_dims = 1  # root position coordinates left out of the observation

    @property
    def brax(self):
        return brax_env(self._brax_name, self.backend)[0]

    @property
    def dt(self) -> float:
        """Seconds per control step (0.05 for every task and backend here)."""
        return brax_env(self._brax_name, self.backend)[1]

    @property
    def observation_space(self) -> Box:
        b = self.brax
        return Box(-jnp.inf, jnp.inf, (b.sys.q_size() - self._root_dims + b.sys.qd_size(),))

    @property
    def action_space(self) -> Box:
        return Box(-1.0, 1.0, (self.brax.sys.act_size(),))

    def _obs(self, ps) -> jax.Array:
        return jnp.concatenate([ps.q[self._root_dims:], ps.qd])

    def reset(self, key, task):
        del task
        state = self.brax.reset(key)
        ps = state.pipeline_state
        obs = self._obs(ps)
        false = jnp.zeros((), bool)
        return LocoState(ps, jnp.zeros((), jnp.int32)), TimeStep(obs, jnp.zeros((), obs.dtype), false, false, {})

    def step(self, key, state: LocoState, action, task):
        del key
        action = jnp.clip(action, -1.0, 1.0)
        ps0 = state.pipeline
        ps = self.brax.pipeline_step(ps0, action)
        pos0, pos = ps0.x.pos[0], ps.x.pos[0]  # [3] torso position before / after
        reward, terminated = self.reward(task, pos0, pos, action, self.dt)
        t = state.t + 1
        return LocoState(ps, t), TimeStep(self._obs(ps), reward, terminated, t >= self.horizon, {})


@dataclass(frozen=True)
class HalfCheetahVel(_BraxLocomotion):
    """HalfCheetah running at a target velocity ~ U[low, high] (MAML paper: [0, 2])."""

    horizon: int = 200
    backend: str = DEFAULT_BACKEND
    low: float = 0.0
    high: float = 2.0
    ctrl_cost_weight: float = 0.05
    num_workers: int = 0  # processes stepping the MuJoCo host simulator (0: in this one); Brax ignores it

    _brax_name = "halfcheetah"

    def __post_init__(self):
        _check_common(self)
        check_float("low", self.low, -100.0, 100.0)
        check_float("high", self.high, -100.0, 100.0)
        if not self.high > self.low:
            raise ConfigError(f"high must be greater than low, got low={self.low}, high={self.high}", "high")

    def task_distribution(self) -> TaskDistribution:
        return TaskDistribution(lambda key: VelTask(jax.random.uniform(key, (), minval=self.low, maxval=self.high)))

    def reward(self, task: VelTask, pos0, pos, action, dt):
        v_x = (pos[0] - pos0[0]) / dt
        r = -jnp.abs(v_x - task.velocity) - self.ctrl_cost_weight * jnp.sum(action**2)
        return r, jnp.zeros((), bool)


@dataclass(frozen=True)
class HalfCheetahDir(_BraxLocomotion):
    """HalfCheetah running forward or backward, direction uniform in {-1, +1}."""

    horizon: int = 200
    backend: str = DEFAULT_BACKEND
    ctrl_cost_weight: float = 0.05
    num_workers: int = 0  # processes stepping the MuJoCo host simulator (0: in this one); Brax ignores it

    _brax_name = "halfcheetah"

    def __post_init__(self):
        _check_common(self)

    def task_distribution(self) -> TaskDistribution:
        def sample(key):
            return DirTask(jnp.where(jax.random.bernoulli(key), 1.0, -1.0))

        return TaskDistribution(sample)

    def reward(self, task: DirTask, pos0, pos, action, dt):
        v_x = (pos[0] - pos0[0]) / dt
        r = task.direction * v_x - self.ctrl_cost_weight * jnp.sum(action**2)
        return r, jnp.zeros((), bool)


@dataclass(frozen=True)
class AntDir(_BraxLocomotion):
    """Ant running in a direction on the circle, or forward/backward (ProMP)."""

    horizon: int = 200
    backend: str = DEFAULT_BACKEND
    directions: str = "circle"  # "circle" or "forward_backward"
    ctrl_cost_weight: float = 0.5
    survive_reward: float = 1.0
    healthy_z_min: float = 0.0
    healthy_z_max: float = 1.0
    num_workers: int = 0  # processes stepping the MuJoCo host simulator (0: in this one); Brax ignores it

    _brax_name = "ant"
    _root_dims = 2

    def __post_init__(self):
        _check_common(self)
        check_choice("directions", self.directions, ("circle", "forward_backward"))
        _check_ant_health(self)

    def task_distribution(self) -> TaskDistribution:
        def sample(key):
            if self.directions == "circle":
                angle = jax.random.uniform(key, (), minval=0.0, maxval=2 * jnp.pi)
                return AntDirTask(jnp.stack([jnp.cos(angle), jnp.sin(angle)]))
            sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
            return AntDirTask(jnp.stack([sign, jnp.zeros_like(sign)]))

        return TaskDistribution(sample)

    def reward(self, task: AntDirTask, pos0, pos, action, dt):
        v_xy = (pos[:2] - pos0[:2]) / dt  # [2]
        r = jnp.dot(task.direction, v_xy) - self.ctrl_cost_weight * jnp.sum(action**2) + self.survive_reward
        z = pos[2]
        terminated = (z < self.healthy_z_min) | (z > self.healthy_z_max)
        return r, terminated


@dataclass(frozen=True)
class AntGoal(_BraxLocomotion):
    """Ant walking to a goal uniform in the disc of radius `radius` (ProMP: 3)."""

    horizon: int = 200
    backend: str = DEFAULT_BACKEND
    radius: float = 3.0
    ctrl_cost_weight: float = 0.1
    num_workers: int = 0  # processes stepping the MuJoCo host simulator (0: in this one); Brax ignores it

    _brax_name = "ant"
    _root_dims = 2

    def __post_init__(self):
        _check_common(self)
        check_float("radius", self.radius, 0.0, 1e3, low_open=True)

    def task_distribution(self) -> TaskDistribution:
        def sample(key):
            k_a, k_r = jax.random.split(key)
            angle = jax.random.uniform(k_a, (), minval=0.0, maxval=2 * jnp.pi)
            r = self.radius * jnp.sqrt(jax.random.uniform(k_r, ()))  # uniform in the disc
            return GoalTask(jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)]))

        return TaskDistribution(sample)

    def reward(self, task: GoalTask, pos0, pos, action, dt):
        del pos0, dt
        r = -jnp.sum(jnp.abs(pos[:2] - task.goal)) - self.ctrl_cost_weight * jnp.sum(action**2)
        return r, jnp.zeros((), bool)
