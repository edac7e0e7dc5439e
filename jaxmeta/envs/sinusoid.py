"""Sinusoid regression tasks, the MAML paper's supervised few-shot benchmark.

Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
section 5.1: each task regresses y = A sin(x - phi) with the amplitude A ~ U[0.1, 5.0]
and the phase phi ~ U[0, pi]; a task's data points have x ~ U[-5, 5]. Tasks are data
(`SinusoidTask`), drawn with `jax.random` and vmappable; there is no environment to
step, so `Sinusoid` has the task distribution and the points of a task only (as the
Meta-World environments have no `reset`/`step` of their own either).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.config import ConfigError, check_float
from jaxmeta.envs.base import Box, TaskDistribution


class SinusoidTask(NamedTuple):
    amplitude: jax.Array  # [] A
    phase: jax.Array  # [] phi


@dataclass(frozen=True)
class Sinusoid:
    """Sinusoid regression y = A sin(x - phi), A, phi and x uniform (Finn et al. 2017, sec. 5.1)."""

    amplitude_low: float = 0.1
    amplitude_high: float = 5.0
    phase_low: float = 0.0
    phase_high: float = math.pi
    x_low: float = -5.0
    x_high: float = 5.0

    def __post_init__(self):
        for low, high in (("amplitude_low", "amplitude_high"), ("phase_low", "phase_high"), ("x_low", "x_high")):
            check_float(low, getattr(self, low), -1e6, 1e6)
            check_float(high, getattr(self, high), -1e6, 1e6)
            if not getattr(self, high) > getattr(self, low):
                raise ConfigError(f"{high} must be greater than {low}, got {low}={getattr(self, low)}, "
                                  f"{high}={getattr(self, high)}", high)

    @property
    def observation_space(self) -> Box:
        """The input x (one number)."""
        return Box(self.x_low, self.x_high, (1,))

    def task_distribution(self) -> TaskDistribution:
        low = jnp.array([self.amplitude_low, self.phase_low])
        high = jnp.array([self.amplitude_high, self.phase_high])

        def sample(key) -> SinusoidTask:
            amplitude, phase = jax.random.uniform(key, (2,), minval=low, maxval=high)  # one draw: A and phi
            return SinusoidTask(amplitude, phase)

        return TaskDistribution(sample)

    @staticmethod
    def target(task: SinusoidTask, x: jax.Array) -> jax.Array:
        """y = A sin(x - phi), elementwise (x [..., 1] -> y [..., 1])."""
        return task.amplitude * jnp.sin(x - task.phase)

    def sample_points(self, key, task: SinusoidTask, num_points: int) -> tuple[jax.Array, jax.Array]:
        """`num_points` data points of one task: (x [N, 1] uniform in [x_low, x_high], y [N, 1]),
        in the dtype of the task."""
        x = jax.random.uniform(key, (num_points, 1), jnp.result_type(task.amplitude), self.x_low, self.x_high)
        return x, self.target(task, x)
