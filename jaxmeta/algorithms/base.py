"""The contract every algorithm implements: `init`, `sample`, `update`, `evaluate`."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from jaxmeta.types import AdaptationCurve, PRNGKey

State = Any  # the algorithm's training state (a pytree)
Batch = Any  # the algorithm family's batch type (a pytree), what `sample` returns


class Algorithm(NamedTuple):
    """Pure functions of a meta-learner, optax style.

    init(key) -> state
    sample(state, key) -> batch          experience: jitted envs, a learned model, or
                                         host simulators (then `jittable` is False)
    update(state, batch) -> (state, metrics)   pure and jittable, whatever sampled
    evaluate(state, key) -> AdaptationCurve

    `train_step(state, key) = update(state, sample(state, key))` is derived here, once.
    With `jittable` (the default) every function is jittable and vmappable; otherwise
    `sample` and `evaluate` step a simulator in Python and only `update` may be jitted.
    """

    init: Callable[[PRNGKey], State]
    sample: Callable[[State, PRNGKey], Batch]
    update: Callable[[State, Batch], tuple[State, dict]]
    evaluate: Callable[[State, PRNGKey], AdaptationCurve]
    jittable: bool = True

    def train_step(self, state: State, key: PRNGKey) -> tuple[State, dict]:
        """One meta-iteration: sample experience, then learn from it."""
        return self.update(state, self.sample(state, key))


def map_algorithm(algo: Algorithm) -> Algorithm:
    """The same algorithm over a leading axis of keys and states, one seed after the
    other inside one program (`jax.lax.map`): the layout that is fastest for several
    seeds on a CPU, where a vmapped batch of seeds runs slower than the seeds in turn."""
    if not algo.jittable:
        raise ValueError("an algorithm that samples on a host simulator cannot be mapped over seeds")
    over = lambda f: lambda *args: jax.lax.map(lambda a: f(*a), args)
    return Algorithm(over(algo.init), over(algo.sample), over(algo.update), over(algo.evaluate))


def vmap_algorithm(algo: Algorithm) -> Algorithm:
    """The same algorithm over a leading axis of keys and states (independent seeds)."""
    if not algo.jittable:
        raise ValueError("an algorithm that samples on a host simulator cannot be vmapped over seeds")
    return Algorithm(jax.vmap(algo.init), jax.vmap(algo.sample), jax.vmap(algo.update), jax.vmap(algo.evaluate))
