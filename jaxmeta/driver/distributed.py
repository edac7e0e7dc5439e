"""Multi-process (multi-host) runs: `jax.distributed` and host copies of global arrays."""
from __future__ import annotations

import jax
import numpy as np


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int,
                           cpu_collectives: str = "gloo", timeout_s: int = 300) -> None:
    """`jax.distributed.initialize` for a multi-process (multi-host) run.

    On CPU the cross-process collectives go through `cpu_collectives` (gloo), which is
    how a two-process run on one machine is tested. Raises if not every process has
    connected within `timeout_s` seconds.
    """
    if jax.config.jax_platforms in (None, "", "cpu") or str(jax.config.jax_platforms).startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)


def to_host(tree):
    """Numpy copies of (replicated) arrays, also when they span several processes."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def is_primary() -> bool:
    """True in the process that writes the run folder (process 0)."""
    return jax.process_index() == 0
