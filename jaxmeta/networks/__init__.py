"""Networks used through explicit params; distributions are distrax."""
from jaxmeta.networks.mlp import ACTIVATIONS, MLP, CategoricalPolicy, GaussianPolicy
