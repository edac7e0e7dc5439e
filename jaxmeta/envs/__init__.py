"""Environments as task distributions, and a registry of them by name."""
from __future__ import annotations

from typing import Any, Callable

from jaxmeta.envs.bandits import BanditTask, BernoulliBandit
from jaxmeta.envs.base import Box, Discrete, MetaEnv, TaskDistribution, action_dim, obs_dim
from jaxmeta.envs.navigation import NavDynamicsTask, NavTask, Navigation2D, Navigation2DDynamics
from jaxmeta.envs.tabular_mdp import MDPTask, TabularMDP
# locomotion imports brax only when an environment is first stepped or measured
from jaxmeta.envs.locomotion import AntDir, AntGoal, HalfCheetahDir, HalfCheetahVel
from jaxmeta.envs.locomotion_dynamics import AntDynamics, HalfCheetahDynamics, SystemTask
# the maze imports gymnax only when a maze is built
from jaxmeta.envs.maze import MazeTask, MetaMaze
# Meta-World imports metaworld only when a simulator is built
from jaxmeta.envs.metaworld import MetaWorldML1, MetaWorldML10, MetaWorldML45, MetaWorldTask
from jaxmeta.envs.mazes import GeneratedMaze, MazeGenTask
from jaxmeta.envs.sinusoid import Sinusoid, SinusoidTask

REGISTRY: dict[str, Callable[..., Any]] = {
    "navigation2d": Navigation2D,
    "bandit": BernoulliBandit,
    "tabular_mdp": TabularMDP,
    "halfcheetah_vel": HalfCheetahVel,
    "halfcheetah_dir": HalfCheetahDir,
    "ant_dir": AntDir,
    "ant_goal": AntGoal,
    "maze": MetaMaze,
    "metaworld-ml1": MetaWorldML1,
    "metaworld-ml10": MetaWorldML10,
    "metaworld-ml45": MetaWorldML45,
    "maze_gen": GeneratedMaze,
    "navigation2d_dynamics": Navigation2DDynamics,
    "halfcheetah_dynamics": HalfCheetahDynamics,
    "ant_dynamics": AntDynamics,
    "sinusoid": Sinusoid,  # supervised regression tasks (no reset/step): maml_regression
}

LOCOMOTION_ENVS = ("halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal")
METAWORLD_ENVS = ("metaworld-ml1", "metaworld-ml10", "metaworld-ml45")
# Environments whose tasks change the dynamics, not the reward (model-based meta-RL).
DYNAMICS_ENVS = ("navigation2d_dynamics", "halfcheetah_dynamics", "ant_dynamics")

# Host simulators (stepped outside XLA, see jaxmeta.host) and the environments they run.
# "jax" is every environment's own jittable implementation (Brax for locomotion);
# Meta-World has none: its environments run on the "metaworld" simulator only.
HOST_SIMULATORS = {"mujoco": LOCOMOTION_ENVS, "metaworld": METAWORLD_ENVS}
HOST_ONLY = {name: "metaworld" for name in METAWORLD_ENVS}  # env -> its one (default) simulator


def default_simulator(env_name: str) -> str:
    """The simulator an environment runs on unless told otherwise: "jax", or the host
    simulator of a host-only environment."""
    return HOST_ONLY.get(env_name, "jax")


# the modules each host simulator imports (`pip install 'jaxmeta[mujoco]'`, `'jaxmeta[metaworld]'`)
HOST_SIMULATOR_MODULES = {"mujoco": ("gymnasium", "mujoco"), "metaworld": ("metaworld",)}


def host_simulator_installed(simulator: str) -> bool:
    """True when the modules host simulator `simulator` needs can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in HOST_SIMULATOR_MODULES[simulator])


def host_simulator(simulator: str, env: Any, num_envs: int) -> Any:
    """A host simulator of `env` holding `num_envs` environments."""
    if simulator == "mujoco":
        from jaxmeta.envs.mujoco import MujocoLocomotion

        return MujocoLocomotion(env, num_envs)
    if simulator == "metaworld":
        from jaxmeta.envs.metaworld import MetaWorldSimulator

        return MetaWorldSimulator(env, num_envs)
    raise ValueError(f"unknown host simulator {simulator!r}; known: {', '.join(HOST_SIMULATORS)}")


def register(name: str, factory: Callable[..., Any]) -> None:
    """Add an environment factory under `name`."""
    REGISTRY[name] = factory


def make(name: str, **kwargs) -> Any:
    """Build a registered environment; unknown names raise with the list of known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**kwargs)


__all__ = [
    "AntDir", "AntDynamics", "AntGoal", "BanditTask", "BernoulliBandit", "Box", "DYNAMICS_ENVS", "Discrete",
    "GeneratedMaze", "HOST_ONLY", "HOST_SIMULATORS", "HalfCheetahDir", "HalfCheetahDynamics", "HalfCheetahVel",
    "LOCOMOTION_ENVS", "METAWORLD_ENVS", "MDPTask", "MazeGenTask", "MazeTask", "MetaEnv", "MetaMaze", "MetaWorldML1",
    "MetaWorldML10", "MetaWorldML45", "MetaWorldTask", "NavDynamicsTask", "NavTask", "Navigation2D",
    "Navigation2DDynamics", "REGISTRY", "Sinusoid", "SinusoidTask", "SystemTask", "TabularMDP", "TaskDistribution",
    "action_dim", "default_simulator", "host_simulator", "host_simulator_installed", "make", "obs_dim", "register",
]
