"""The contract every algorithm implements."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class AdaptationCurve(NamedTuple):
    """Mean return on held-out tasks after 0, 1, ..., K adaptation steps (or episodes)."""

    returns: jax.Array  # [K+1] mean over tasks
    per_task: jax.Array  # [num_tasks, K+1]


class Algorithm(NamedTuple):
    """Pure functions of a meta-learner, optax style.

    init(key) -> state; train_step(state, key) -> (state, metrics);
    evaluate(state, key) -> AdaptationCurve. All are jittable and vmappable.
    """

    init: Callable[[jax.Array], Any]
    train_step: Callable[[Any, jax.Array], tuple[Any, dict]]
    evaluate: Callable[[Any, jax.Array], AdaptationCurve]
