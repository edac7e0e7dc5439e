"""Devices, hosts, seeds and sweeps: the "tasks" mesh and vmapped training states.

One code path from one CPU to a TPU slice. The task-batch axis of every meta-iteration
is sharded over a 1-D `jax.sharding.Mesh` whose axis is named "tasks": algorithms call
`shard_tasks` on their batch of tasks (and the per-task keys) right where they sample
it, and GSPMD partitions the vmapped rollouts, the adaptation and the losses along it;
the means over tasks (losses, gradients, KLs) become all-reduces across the mesh. With
no mesh active, or a mesh of one device, `shard_tasks` is the identity, so the library
runs unchanged without a mesh.

Multi-host: call `initialize_distributed(...)` (a thin wrapper of
`jax.distributed.initialize`) in every process before anything else touches JAX; the
mesh then spans the devices of all processes. See docs/scaling.md.

`vmap_algorithm` and `sweep` batch whole training states, over seeds (keys) or over
hyperparameter values that enter the program as arrays.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

TASKS = "tasks"


# --------------------------------------------------------------------------- meshes
def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named "tasks" over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (TASKS,), axis_types=(AxisType.Auto,))


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None):
    """Make `mesh` the active mesh while tracing and running (None: no mesh)."""
    if mesh is None:
        yield None
        return
    with jax.set_mesh(mesh):
        yield mesh


def _active_task_axis_size() -> int:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or TASKS not in mesh.axis_names:
        return 1
    return int(dict(zip(mesh.axis_names, mesh.axis_sizes))[TASKS])


def shard_tasks(tree):
    """Constrain the leading (task) axis of every leaf to the "tasks" mesh axis.

    The identity when no mesh with a "tasks" axis is active, when that axis has one
    device, and for leaves whose leading size it does not divide (they stay as GSPMD
    places them). Safe under `jit`, `vmap` (the vmapped axis stays unsharded) and grad.
    """
    n = _active_task_axis_size()
    if n <= 1:
        return tree

    def one(x):
        if not hasattr(x, "shape") or x.ndim == 0 or x.shape[0] % n:
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jax.lax.with_sharding_constraint(x, P(TASKS, *([None] * (x.ndim - 1))))

    return jax.tree.map(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of a value every device holds whole (training states, metrics)."""
    return NamedSharding(mesh, P())


def to_host(tree):
    """Numpy copies of (replicated) arrays, also when they span several processes."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int,
                           cpu_collectives: str = "gloo") -> None:
    """`jax.distributed.initialize` for a multi-process (multi-host) run.

    On CPU the cross-process collectives go through `cpu_collectives` (gloo), which is
    how a two-process run on one machine is tested.
    """
    if jax.config.jax_platforms in (None, "", "cpu") or str(jax.config.jax_platforms).startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


# --------------------------------------------------------------------------- seeds, sweeps
def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """[num_seeds, 2] keys: row i is PRNGKey(seed + i), so seed i of a batch of seeds
    trains exactly as a single run with `--seed seed+i` would."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])


def vmap_algorithm(algo):
    """The same algorithm over a leading axis of keys and states (independent seeds)."""
    from jaxmeta.algorithms.base import Algorithm

    return Algorithm(jax.vmap(algo.init), jax.vmap(algo.train_step), jax.vmap(algo.evaluate))


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


def sweep(build: Callable[[jax.Array], Any], values):
    """One vmapped program training one member per hyperparameter value.

    Args:
      build: value -> Algorithm. Called inside `vmap` with one member's value as a traced
        array, so the value must enter the algorithm as an array, e.g.
        `lambda lr: maml(env, tasks, replace_unchecked(config, inner_lr=lr))` (MAML's
        inner step size, RL^2's PPO learning rate and other plain float fields work).
      values: [V, ...] hyperparameter values (a pytree of arrays is fine).
    Returns:
      Algorithm over the batch: init(keys [V, 2]) -> SweepState; train_step(state,
      keys [V, 2]) -> (state, metrics with leaves [V]); evaluate(state, keys [V, 2]).
      The values travel in the state, so a checkpoint of it records them.
    """
    from jaxmeta.algorithms.base import Algorithm

    values = jax.tree.map(jnp.asarray, values)

    def init(keys):
        return SweepState(values, jax.vmap(lambda v, k: build(v).init(k))(values, keys))

    def train_step(state: SweepState, keys):
        new, metrics = jax.vmap(lambda v, s, k: build(v).train_step(s, k))(state.value, state.state, keys)
        return SweepState(state.value, new), metrics

    def evaluate(state: SweepState, keys):
        return jax.vmap(lambda v, s, k: build(v).evaluate(s, k))(state.value, state.state, keys)

    return Algorithm(init, train_step, evaluate)
