"""Environments as task distributions, and a registry of them by name."""
from __future__ import annotations

from typing import Any, Callable

from jaxmeta.envs.bandits import BanditTask, BernoulliBandit
from jaxmeta.envs.base import Box, Discrete, MetaEnv, TaskDistribution, action_dim, obs_dim
from jaxmeta.envs.navigation import NavTask, Navigation2D
from jaxmeta.envs.tabular_mdp import MDPTask, TabularMDP

REGISTRY: dict[str, Callable[..., Any]] = {
    "navigation2d": Navigation2D,
    "bandit": BernoulliBandit,
    "tabular_mdp": TabularMDP,
}


def register(name: str, factory: Callable[..., Any]) -> None:
    """Add an environment factory under `name`."""
    REGISTRY[name] = factory


def make(name: str, **kwargs) -> Any:
    """Build a registered environment; unknown names raise with the list of known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**kwargs)


__all__ = [
    "BanditTask", "BernoulliBandit", "Box", "Discrete", "MDPTask", "MetaEnv", "NavTask",
    "Navigation2D", "REGISTRY", "TabularMDP", "TaskDistribution", "action_dim", "make",
    "obs_dim", "register",
]
