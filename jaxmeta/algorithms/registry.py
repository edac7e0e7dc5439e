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
    # (env, config, algorithm, state, key, collector) -> (header, rows) or (header, rows,
    # curves by name) for the final table; None means the adaptation curve from `evaluate`.
    final_table: Callable[..., tuple[list[str], list[list[Any]]]] | None = None


REGISTRY: dict[str, AlgorithmSpec] = {}


def register(spec: AlgorithmSpec) -> None:
    REGISTRY[spec.name] = spec


def get(name: str) -> AlgorithmSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
