"""Networks used through explicit params; distributions are distrax."""
from jaxmeta.networks.mlp import ACTIVATIONS, MLP, GaussianPolicy
from jaxmeta.networks.sequence import (
    GRUArchitecture, GRUNet, GRUPolicy, LSTMCarry, LSTMNet, SNAILArchitecture, SNAILCarry, SNAILNet, SNAILPolicy,
)
