"""Algorithms by name, for the command line and the driver.

An `AlgorithmSpec` tells the driver how to build an algorithm from an environment, a
config and a collector, which environment it trains on by default, which short
command-line flags stand for which config or environment fields, and how to make its
final table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    config_cls: type  # a frozen dataclass validated at construction
    build: Callable[..., Any]  # (env, config, collector) -> Algorithm
    default_env: str
    envs: tuple[str, ...]  # environments it supports
    description: str = ""
    # short flag -> field name (of the config or of the environment), e.g. {"arms": "num_arms"}
    aliases: dict[str, str] = field(default_factory=dict)
    # (env, config, algorithm, state, key, collector, initial_state=...) -> (header, rows)
    # or (header, rows, curves) for the final table, curves being {label: AdaptationCurve}
    # to plot; None means the adaptation curve from `evaluate`.
    final_table: Callable[..., tuple] | None = None
    # environment name -> its own final table, instead of `final_table` (e.g. Meta-World's
    # success rates on its test tasks)
    env_final_tables: dict[str, Callable[..., tuple]] = field(default_factory=dict)

    # on a CPU-only machine: how many XLA host devices the command line shards the task
    # batch over, from the config (None: one device; measured per algorithm, see
    # docs/benchmarks.md "CPU layout")
    cpu_devices: Callable[[Any], int] | None = None
    # on a CPU: how several seeds run, "vmap" or "map" (in turn inside one program),
    # whichever measured faster for this algorithm (docs/benchmarks.md "CPU layout")
    cpu_seed_layout: str = "vmap"
    # on a CPU-only machine: environment -> the host simulator the command line runs a
    # one-seed run on when neither --simulator nor a config file names one, measured
    # faster there than the environment's own jittable code (docs/benchmarks.md "The
    # locomotion table"); its environments then step in one worker process per CPU core
    cpu_simulators: dict[str, str] = field(default_factory=dict)
    # what the adaptation curve (`AdaptationCurve.returns`) and the training metrics
    # `*_<score>` measure: "return" (reinforcement learning: metrics `*_return` and
    # `*_reward`, higher is better), or a supervised loss such as "mse" (lower is
    # better), which the driver's plots and progress bar then show and label
    score: str = "return"

    def final_table_for(self, env: str) -> Callable[..., tuple] | None:
        """The final table function of a run on `env` (None: the adaptation curve)."""
        return self.env_final_tables.get(env, self.final_table)


REGISTRY: dict[str, AlgorithmSpec] = {}


def register(spec: AlgorithmSpec) -> None:
    REGISTRY[spec.name] = spec


def get(name: str) -> AlgorithmSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
