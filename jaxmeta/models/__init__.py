"""Learned dynamics for model-based meta-RL: ensembles, replay, planners, model envs.

    dynamics.py    DynamicsModel (an ensemble of MLPs on the normalised state change),
                   Normalizer, fit (Adam, per-member validation split, early stopping)
    buffer.py      EpisodeBuffer: real episodes as arrays with a write index
    planners.py    random_shooting and cem: pure MPC planners
    model_env.py   ModelEnv: a learned model + a known reward and termination as a jittable MetaEnv
"""
from jaxmeta.models.buffer import (
    EpisodeBuffer, buffer_add, buffer_init, filled, initial_observations, segment_mask, segments, transitions,
)
from jaxmeta.models.dynamics import (
    DynamicsConfig, DynamicsModel, FitInfo, ModelState, Normalizer, fit, fit_normalizer, identity_normalizer,
    member, sample_indices, transition_loss,
)
from jaxmeta.models.model_env import ModelEnv, ModelEnvState, ModelTask, check_planning_env, transition_done
from jaxmeta.models.planners import Plan, cem, random_shooting, sequence_returns

__all__ = [
    "DynamicsConfig", "DynamicsModel", "EpisodeBuffer", "FitInfo", "ModelEnv", "ModelEnvState", "ModelState",
    "ModelTask", "Normalizer", "Plan", "buffer_add", "buffer_init", "cem", "check_planning_env", "filled", "fit",
    "fit_normalizer", "identity_normalizer", "initial_observations", "member", "random_shooting", "sample_indices", "segment_mask",
    "segments", "sequence_returns", "transition_done", "transition_loss", "transitions",
]
