"""Measurement helpers shared by the benchmark scripts (one JSON line per measurement).

FLOPs are counted from the jaxpr, not from XLA's cost analysis, because the latter
counts the body of every loop once: here a `scan` body counts `length` times and a
`while` body counts as many times as the caller says it ran.
"""
from __future__ import annotations

import json
import math
import resource
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

# primitives that move or reshape data, free in the FLOP count
_FREE = {
    "broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims", "slice",
    "dynamic_slice", "dynamic_update_slice", "gather", "scatter", "concatenate", "pad",
    "convert_element_type", "copy", "copy_p", "select_n", "iota", "rev", "device_put",
    "stop_gradient", "random_bits", "random_seed", "random_wrap", "random_unwrap",
    "threefry2x32", "shift_right_logical", "shift_left", "or", "and", "not", "xor",
    "bitcast_convert_type", "eq", "ne", "lt", "le", "gt", "ge", "argmax", "argmin",
    "sort", "split", "squeeze", "clamp",
}


def _size(aval) -> int:
    return int(math.prod(getattr(aval, "shape", ())))


def _dot_flops(eqn) -> int:
    (lc, rc), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    contract = math.prod(lhs.shape[d] for d in lc)
    return 2 * _size(eqn.outvars[0].aval) * int(contract)


def jaxpr_flops(jaxpr, while_trips: list[int] | None = None) -> float:
    """FLOPs of a (closed) jaxpr: 2*M*N*K per matmul, 1 per element of other arithmetic.

    Args:
      jaxpr: a jaxpr or ClosedJaxpr.
      while_trips: trip counts of the `while` loops in the order they are met
        (depth first); loops past the list count once.
    """
    trips = list(while_trips or [])

    def count(jx) -> float:
        jx = getattr(jx, "jaxpr", jx)
        total = 0.0
        for eqn in jx.eqns:
            name = eqn.primitive.name
            sub = [v for v in eqn.params.values() if isinstance(v, (jax_core.ClosedJaxpr, jax_core.Jaxpr))]
            if name == "dot_general":
                total += _dot_flops(eqn)
            elif name == "scan":
                total += eqn.params["length"] * count(eqn.params["jaxpr"])
            elif name == "while":
                n = trips.pop(0) if trips else 1
                total += n * (count(eqn.params["body_jaxpr"]) + count(eqn.params["cond_jaxpr"]))
            elif name == "cond":
                total += max(count(b) for b in eqn.params["branches"])
            elif sub:
                total += sum(count(s) for s in sub)
            elif name not in _FREE:
                total += sum(_size(v.aval) for v in eqn.outvars)
        return total

    return count(jaxpr)


def fn_flops(fn: Callable, *args, while_trips: list[int] | None = None) -> float:
    return jaxpr_flops(jax.make_jaxpr(fn)(*args), while_trips)


def compiled(fn: Callable, *args) -> tuple[Any, float]:
    """`fn` jitted and compiled for `args`, and the seconds compiling took."""
    t0 = time.perf_counter()
    program = jax.jit(fn).lower(*args).compile()
    return program, time.perf_counter() - t0


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median wall seconds of `fn()` (blocked until ready) over `repeats` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def matmul_gflops(width: int, rows: int = 40_000, repeats: int = 7, chain: int = 20) -> float:
    """GFLOP/s of float32 [rows, width] x [width, width] products, timed in this process.

    `chain` products run back to back in one compiled program (x <- x @ w), so the figure
    is the CPU's rate at this shape, not the dispatch cost of one small call. With several
    devices the rows are split over all of them, so the reference uses the same devices
    as the measured program.
    """
    a = jax.random.normal(jax.random.PRNGKey(0), (rows, width), jnp.float32)
    b = jax.random.orthogonal(jax.random.PRNGKey(1), width).astype(jnp.float32)  # keeps |x| fixed
    n = jax.device_count()
    if n > 1 and rows % n == 0:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import numpy as np

        mesh = Mesh(np.asarray(jax.devices()), ("rows",))
        a = jax.device_put(a, NamedSharding(mesh, P("rows", None)))
        b = jax.device_put(b, NamedSharding(mesh, P()))
    f = jax.jit(lambda a, b: jax.lax.fori_loop(0, chain, lambda i, x: x @ b, a))
    jax.block_until_ready(f(a, b))
    med, _ = median_time(lambda: f(a, b), repeats)
    return 2.0 * rows * width * width * chain / med / 1e9


def peak_memory_mb() -> dict:
    """Peak device memory where the backend reports it; the process's peak RSS always."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        out["peak_device_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def device_info() -> dict:
    d = jax.devices()[0]
    return {"jax": jax.__version__, "device": d.device_kind, "platform": d.platform, "device_count": jax.device_count()}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def maml_config_record(config, horizon: int) -> dict:
    """The MAML config fields a benchmark line reports."""
    return {"meta_batch_size": config.meta_batch_size, "num_episodes": config.num_episodes, "horizon": horizon,
            "num_inner_steps": config.num_inner_steps, "hidden_sizes": config.hidden_sizes, "outer": config.outer,
            **({"cg_subsample": config.cg_subsample} if config.cg_subsample != 1.0 else {})}
