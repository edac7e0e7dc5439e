"""Brax HalfCheetah and Ant whose task perturbs the system: dynamics-task families.

GrBAL's tasks (Nagabandi, Clavera et al. 2019, "Learning to Adapt in Dynamic,
Real-World Environments through Meta-Reinforcement Learning") change the dynamics, not
the reward: a crippled joint, other masses or damping. Here a task is a `SystemTask`
of scales, and every step runs Brax's own pipeline on the task's `System`:

- `actuator_scale` [A]: multiplies the action before it reaches the actuators; a
  crippled joint (family "cripple") has its actuator scaled by `cripple_scale` (0: the
  joint is limp). On the Ant a crippled *leg* scales both of its actuators.
- `mass_scale` [num_links]: scales each body's mass and rotational inertia (a denser or
  lighter body).
- `damping_scale` [qd_size]: scales each joint's damping.

The perturbed system is built inside `reset`/`step` from the task, so a batch of tasks
is a `jax.vmap` axis over `System`s, as Brax's `DomainRandomizationVmapWrapper` vmaps
the system for domain randomisation (and, like it, the env's `sys` is swapped for the
call). Masses and damping are written both to Brax's fields (`link.inertia`,
`dof.damping`: the generalized, positional and spring pipelines) and to MuJoCo's
(`body_mass`, `body_inertia`, `dof_damping`: the mjx pipeline). The spring backend
models joints as springs with their own damping and ignores `dof.damping`: use the
generalized backend (the default) for damping tasks.

The reward is the same for every task, a pure function of the transition
(`transition_reward(obs, action, next_obs, task)`, and `transition_done` for the
termination), so a planner or a learned model can use it: the
forward velocity of the torso at the end of the step (the root's x velocity, an entry
of the observation) minus a control cost on the (clipped) commanded action; the Ant
adds a survive bonus and ends the episode when the torso height leaves
[healthy_z_min, healthy_z_max] (gymnasium's Ant-v5: [0.2, 1.0]). Observations are
those of `jaxmeta.envs.locomotion` (joint positions without the root's x (and y), then
velocities).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import ConfigError, check_choice, check_float
from jaxmeta.envs.base import TaskDistribution
from jaxmeta.envs.locomotion import LocoState, _BraxLocomotion, _check_ant_health, _check_common
from jaxmeta.types import TimeStep

FAMILIES = ("cripple", "mass_damping", "all")


class SystemTask(NamedTuple):
    actuator_scale: jax.Array  # [A] gain on each actuator's command
    mass_scale: jax.Array  # [num_links] scale of each body's mass and inertia
    damping_scale: jax.Array  # [qd_size] scale of each joint's damping


@contextlib.contextmanager
def _with_system(env, sys):
    """`env` running on `sys` for the duration of the block (Brax's own DR pattern)."""
    old = env.sys
    env.sys = sys
    try:
        yield env
    finally:
        env.sys = old


@dataclass(frozen=True)
class _DynamicsLocomotion(_BraxLocomotion):
    """Shared fields and machinery: the task's system, the obs-based reward, reset and step."""

    horizon: int = 200
    backend: str = "generalized"
    family: str = "cripple"  # "cripple", "mass_damping" or "all"
    cripple_scale: float = 0.0
    mass_low: float = 0.5
    mass_high: float = 1.5
    damping_low: float = 0.5
    damping_high: float = 1.5
    ctrl_cost_weight: float = 0.05

    _cripple_groups = ()  # actuator -> the joint group crippled together

    reward_uses_task = False  # the reward is the same for every task; only the dynamics change

    def __post_init__(self):
        _check_common(self)
        check_choice("family", self.family, FAMILIES)
        check_float("cripple_scale", self.cripple_scale, 0.0, 10.0)
        for lo, hi in (("mass_low", "mass_high"), ("damping_low", "damping_high")):
            check_float(lo, getattr(self, lo), 0.0, 100.0, low_open=True)
            check_float(hi, getattr(self, hi), 0.0, 100.0, low_open=True)
            if getattr(self, hi) < getattr(self, lo):
                raise ConfigError(f"{hi} must be >= {lo}, got {getattr(self, lo)}, {getattr(self, hi)}", hi)

    @property
    def velocity_index(self) -> int:
        """Where the root's forward (x) velocity sits in the observation."""
        return self.brax.sys.q_size() - self._root_dims

    def nominal_task(self) -> SystemTask:
        """The unperturbed system (every scale 1)."""
        sys = self.brax.sys
        return SystemTask(jnp.ones((sys.act_size(),)), jnp.ones((sys.num_links(),)), jnp.ones((sys.qd_size(),)))

    def task_distribution(self) -> TaskDistribution:
        sys = self.brax.sys
        A, L, D = sys.act_size(), sys.num_links(), sys.qd_size()
        groups = tuple(self._cripple_groups or range(A))  # actuator -> group, static

        def sample(key):
            k_c, k_m, k_d = jax.random.split(key, 3)
            actuator = jnp.ones((A,))
            mass, damping = jnp.ones((L,)), jnp.ones((D,))
            if self.family in ("cripple", "all"):
                g = jax.random.randint(k_c, (), 0, max(groups) + 1)
                actuator = jnp.where(jnp.asarray(groups) == g, self.cripple_scale, 1.0)
            if self.family in ("mass_damping", "all"):
                mass = jax.random.uniform(k_m, (L,), minval=self.mass_low, maxval=self.mass_high)
                damping = jax.random.uniform(k_d, (D,), minval=self.damping_low, maxval=self.damping_high)
            return SystemTask(actuator, mass, damping)

        return TaskDistribution(sample)

    def system(self, task: SystemTask):
        """Brax's system with the task's masses, inertias and damping."""
        sys = self.brax.sys
        m = task.mass_scale.astype(sys.link.inertia.mass.dtype)
        d = task.damping_scale.astype(sys.dof.damping.dtype)
        body = jnp.concatenate([jnp.ones((1,), m.dtype), m])  # MuJoCo's body 0 is the world
        return sys.tree_replace({
            "link.inertia.mass": sys.link.inertia.mass * m,
            "link.inertia.i": sys.link.inertia.i * m[:, None, None],
            "dof.damping": sys.dof.damping * d,
            "body_mass": sys.body_mass * body,
            "body_inertia": sys.body_inertia * body[:, None],
            "dof_damping": sys.dof_damping * d,
        })

    def transition_reward(self, obs, action, next_obs, task=None):
        """Forward velocity at the end of the step - ctrl_cost * |a|^2 (+ survive bonus)."""
        del obs, task
        a = jnp.clip(action, -1.0, 1.0)
        return next_obs[self.velocity_index] - self.ctrl_cost_weight * jnp.sum(a**2) + self._survive()

    def _survive(self):
        return 0.0

    def transition_done(self, obs, action, next_obs, task=None) -> jax.Array:
        """Whether the transition ends the episode (never, except the Ant's health check)."""
        return jnp.zeros((), bool)

    def reset(self, key, task: SystemTask):
        with _with_system(self.brax, self.system(task)) as env:
            ps = env.reset(key).pipeline_state
        obs = self._obs(ps)
        false = jnp.zeros((), bool)
        return LocoState(ps, jnp.zeros((), jnp.int32)), TimeStep(obs, jnp.zeros((), obs.dtype), false, false, {})

    def step(self, key, state: LocoState, action, task: SystemTask):
        del key
        action = jnp.clip(action, -1.0, 1.0)
        with _with_system(self.brax, self.system(task)) as env:
            ps = env.pipeline_step(state.pipeline, action * task.actuator_scale.astype(action.dtype))
        obs0, obs = self._obs(state.pipeline), self._obs(ps)
        reward = self.transition_reward(obs0, action, obs, task)
        t = state.t + 1
        done = self.transition_done(obs0, action, obs, task)
        return LocoState(ps, t), TimeStep(obs, reward, done, t >= self.horizon, {})


@dataclass(frozen=True)
class HalfCheetahDynamics(_DynamicsLocomotion):
    """HalfCheetah running forward; the task cripples a joint or changes masses and damping."""

    _brax_name = "halfcheetah"


@dataclass(frozen=True)
class AntDynamics(_DynamicsLocomotion):
    """Ant running forward (+x); the task cripples a leg or changes masses and damping.

    A crippled leg scales both of its actuators (hip and ankle)."""

    ctrl_cost_weight: float = 0.5
    survive_reward: float = 1.0
    healthy_z_min: float = 0.2
    healthy_z_max: float = 1.0

    _brax_name = "ant"
    _root_dims = 2
    _cripple_groups = (0, 0, 1, 1, 2, 2, 3, 3)  # Brax's Ant: actuators (hip, ankle) leg by leg

    def __post_init__(self):
        super().__post_init__()
        _check_ant_health(self)

    def _survive(self):
        return self.survive_reward

    def transition_done(self, obs, action, next_obs, task=None) -> jax.Array:
        z = next_obs[0]  # the torso height (the root's x, y are not observed)
        return (z < self.healthy_z_min) | (z > self.healthy_z_max)
