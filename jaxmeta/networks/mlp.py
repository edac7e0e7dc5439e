"""Feed-forward policies used through explicit parameter pytrees."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.types import default_float

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "elu": jax.nn.elu}


class MLP(nn.Module):
    """Dense layers with Glorot-uniform weights and zero biases (as pytorch-maml-rl)."""

    hidden_sizes: Sequence[int]
    out_size: int
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        init = nn.initializers.xavier_uniform()
        dtype = default_float()
        for h in self.hidden_sizes:
            x = act(nn.Dense(h, kernel_init=init, param_dtype=dtype)(x))
        return nn.Dense(self.out_size, kernel_init=init, param_dtype=dtype)(x)


@dataclass(frozen=True)
class GaussianPolicy:
    """Diagonal Gaussian policy: MLP mean and a state-independent learned log-std.

    Parameters are {"mlp": flax params, "log_std": [A]}; std = max(exp(log_std), min_std).
    """

    obs_dim: int
    action_dim: int
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_std: float = 1.0
    min_std: float = 1e-6

    @property
    def net(self) -> MLP:
        return MLP(self.hidden_sizes, self.action_dim, self.activation)

    def init(self, key) -> dict:
        mlp = self.net.init(key, jnp.zeros((1, self.obs_dim), default_float()))["params"]
        log_std = jnp.full((self.action_dim,), math.log(self.init_std), dtype=jax.tree.leaves(mlp)[0].dtype)
        return {"mlp": mlp, "log_std": log_std}

    def apply(self, params, obs):
        """Returns (mean [..., A], log_std [A]) with log_std floored at log(min_std)."""
        mean = self.net.apply({"params": params["mlp"]}, obs)
        log_std = jnp.maximum(params["log_std"], math.log(self.min_std))
        return mean, log_std

    @staticmethod
    def distribution(mean, log_std) -> distrax.Distribution:
        return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std) * jnp.ones_like(mean))

    def log_prob(self, params, obs, action):
        return self.distribution(*self.apply(params, obs)).log_prob(action)

    def act(self, params, obs, key):
        """Sample actions for a batch of observations; returns (action, log_prob)."""
        dist = self.distribution(*self.apply(params, obs))
        return dist.sample_and_log_prob(seed=key)
