"""jaxmeta: meta-reinforcement learning as pure JAX functions."""
from jaxmeta import envs, rl
from jaxmeta.algorithms import (
    MAML, Algorithm, MAMLBatch, MAMLConfig, MAMLQConfig, MAMLState, RL2Config, SNAILConfig, TrialBatch, maml, maml_q,
    rl2, snail,
)
from jaxmeta.config import ConfigError
from jaxmeta.types import AdaptationCurve, TimeStep, Trajectory

__version__ = "0.1.0"
