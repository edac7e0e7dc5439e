"""Networks used through explicit params; distributions are distrax."""
from jaxmeta.networks.mlp import ACTIVATIONS, MLP, CategoricalPolicy, GaussianPolicy
from jaxmeta.networks.sequence import GRUNet, GRUPolicy, SNAILCarry, SNAILNet, SNAILPolicy
