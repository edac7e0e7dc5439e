"""The "tasks" mesh: one code path from one CPU to a TPU slice.

The task-batch axis of every meta-iteration is sharded over a 1-D `jax.sharding.Mesh`
whose axis is named "tasks": algorithms call `shard_tasks` on their batch of tasks (and
the per-task keys) right where they sample it, and GSPMD partitions the vmapped
rollouts, the adaptation and the losses along it; the means over tasks (losses,
gradients, KLs) become all-reduces across the mesh. With no mesh active, or a mesh of
one device, `shard_tasks` is the identity, so the library runs unchanged without a mesh.

Multi-host runs, seeds and sweeps live in the driver (`jaxmeta.driver.distributed`,
`jaxmeta.driver.seeds`). See docs/scaling.md.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import jax
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
