"""MAML for RL composed from parts: inner objective, step size, outer update."""
from jaxmeta.algorithms.maml import parts
from jaxmeta.algorithms.maml.core import (
    MAML, Episodes, MAMLBatch, MAMLConfig, MAMLState, MetaParams, adaptation_curve, batch_returns, maml,
)
from jaxmeta.algorithms.maml.parts import (
    InnerObjective, OuterUpdate, ProMPState, StepSize, adam, dice, fixed, learned, lvc, promp, trpo, vpg,
)

__all__ = [
    "MAML", "Episodes", "InnerObjective", "MAMLBatch", "MAMLConfig", "MAMLState", "MetaParams", "OuterUpdate",
    "ProMPState", "StepSize", "adam", "adaptation_curve", "batch_returns", "dice", "fixed", "learned", "lvc",
    "maml", "parts", "promp", "trpo", "vpg",
]
