"""jaxmeta: meta-reinforcement learning as pure JAX functions."""
from jaxmeta import envs, rl
from jaxmeta.algorithms import MAML, AdaptationCurve, Algorithm, MAMLConfig, MAMLState, maml
from jaxmeta.algorithms import RL2Config, SNAILConfig, rl2, snail
from jaxmeta.config import ConfigError
from jaxmeta.types import TimeStep, Trajectory

__version__ = "0.1.0"
