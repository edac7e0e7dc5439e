"""jaxmeta: meta-reinforcement learning as pure JAX functions."""
from jaxmeta import envs, models, papers, rl
from jaxmeta.algorithms import (
    MAML, Algorithm, GrBALConfig, MAMLBatch, MAMLConfig, MAMLQConfig, MAMLRegressionConfig, MAMLState, MBMPOConfig,
    RL2Config, SNAILConfig, TrialBatch, grbal, maml, maml_q, maml_regression, mbmpo, rl2, snail,
)
from jaxmeta.config import ConfigError
from jaxmeta.papers import paper_values
from jaxmeta.types import AdaptationCurve, TimeStep, Trajectory

__version__ = "0.1.0"
