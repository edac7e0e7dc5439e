"""Seeds and sweeps: whole training runs batched by `jax.vmap`.

`--seeds S` trains seeds seed, seed+1, ..., seed+S-1 as one program (`vmap_algorithm`
over the whole training state); seed i gets exactly the keys a single run with
`--seed seed+i` gets. `sweep` vmaps over hyperparameter values that enter the program
as arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.algorithms.base import Algorithm


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """[num_seeds, 2] keys: row i is PRNGKey(seed + i), so seed i of a batch of seeds
    trains exactly as a single run with `--seed seed+i` would."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])


class RunKeys(NamedTuple):
    """The keys of a run (host numpy arrays): [2], or [S, 2] for S vmapped seeds.

    Meta-iteration `it` trains with fold_in(train, it), so a resumed run draws the same
    keys as an uninterrupted one.
    """

    init: np.ndarray
    train: np.ndarray
    eval: np.ndarray


def run_keys(seed: int, num_seeds: int = 1) -> RunKeys:
    if num_seeds > 1:
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(seed_keys(seed, num_seeds))  # [S, 3, 2]
        parts = keys[:, 0], keys[:, 1], keys[:, 2]
    else:
        parts = jax.random.split(jax.random.PRNGKey(seed), 3)
    return RunKeys(*(np.asarray(k) for k in parts))


class SweepState(NamedTuple):
    value: Any  # [V, ...] the hyperparameter value of each member, an array
    state: Any  # the members' training states, leaves [V, ...]


def replace_unchecked(config, **changes):
    """A copy of a frozen config dataclass with fields set *without* validation.

    For sweeps: the new values may be tracers (one member of a vmapped batch of values),
    which the range checks of `__post_init__` cannot inspect. Validate the concrete
    values yourself (e.g. `dataclasses.replace(config, field=float(v))` for each v).
    """
    new = object.__new__(type(config))
    for f in dataclasses.fields(config):
        object.__setattr__(new, f.name, changes.pop(f.name, getattr(config, f.name)))
    if changes:
        raise TypeError(f"{type(config).__name__} has no field(s) {sorted(changes)}")
    return new


def sweep(build: Callable[[jax.Array], Algorithm], values) -> Algorithm:
    """One vmapped program training one member per hyperparameter value.

    Args:
      build: value -> Algorithm. Called inside `vmap` with one member's value as a traced
        array, so the value must enter the algorithm as an array, e.g.
        `lambda lr: maml(env, tasks, replace_unchecked(config, inner_lr=lr))` (MAML's
        inner step size, RL^2's PPO learning rate and other plain float fields work).
      values: [V, ...] hyperparameter values (a pytree of arrays is fine).
    Returns:
      Algorithm over the batch: init(keys [V, 2]) -> SweepState; sample(state, keys
      [V, 2]) -> batches [V, ...]; update(state, batches) -> (state, metrics with leaves
      [V]); evaluate(state, keys [V, 2]). The values travel in the state, so a
      checkpoint of it records them.
    """
    values = jax.tree.map(jnp.asarray, values)

    def init(keys):
        return SweepState(values, jax.vmap(lambda v, k: build(v).init(k))(values, keys))

    def sample(state: SweepState, keys):
        return jax.vmap(lambda v, s, k: build(v).sample(s, k))(state.value, state.state, keys)

    def update(state: SweepState, batch):
        new, metrics = jax.vmap(lambda v, s, b: build(v).update(s, b))(state.value, state.state, batch)
        return SweepState(state.value, new), metrics

    def evaluate(state: SweepState, keys):
        return jax.vmap(lambda v, s, k: build(v).evaluate(s, k))(state.value, state.state, keys)

    return Algorithm(init, sample, update, evaluate)
