"""Q-networks over discrete actions and the policies they define, through explicit params.

`QNetwork.apply(params, obs) -> q [..., A]`. Two kinds:

- "tabular": q = obs @ table with table [D, A]; over one-hot observations (e.g. the
  generated maze's `observation="cell"`) this is exactly a table of Q-values, and a
  gradient step on a TD loss is a tabular Q-learning update of the visited entries;
- "mlp": dense layers (Glorot weights, zero biases) from the observation to A values
  (Mnih et al. 2015's Q-network, without the convolutions).

Policies from Q-values (Sutton & Barto 2018, ch. 2 and 6): Boltzmann (softmax of q / T)
and epsilon-greedy with ties among the greedy actions broken uniformly at random.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxmeta.networks.mlp import MLP

Q_NETWORKS = ("tabular", "mlp")


@dataclass(frozen=True)
class QNetwork:
    """Q-values of `num_actions` actions from a flat observation of size `obs_dim`.

    "tabular" params are {"table": [D, A]} drawn N(0, init_scale^2); "mlp" params are
    flax's {"params": ...} tree of `MLP(hidden_sizes, A)`.
    """

    obs_dim: int
    num_actions: int
    kind: str = "tabular"
    hidden_sizes: tuple[int, ...] = (64,)
    activation: str = "relu"
    init_scale: float = 0.01

    def init(self, key) -> dict:
        if self.kind == "tabular":
            return {"table": self.init_scale * jax.random.normal(key, (self.obs_dim, self.num_actions))}
        net = MLP(self.hidden_sizes, self.num_actions, self.activation)
        return dict(net.init(key, jnp.zeros((1, self.obs_dim)))["params"])

    def apply(self, params, obs: jax.Array) -> jax.Array:
        """Q-values [..., A] of observations [..., D] (in the params' dtype)."""
        # rows as one 2-D matrix: XLA's CPU dot is over twice as fast on [N, D] as on
        # [T, E, D] once vmapped over tasks (a batch dimension beside two free ones)
        dtype = jax.tree.leaves(params)[0].dtype
        flat = obs.reshape((-1, obs.shape[-1])).astype(dtype)
        if self.kind == "tabular":
            q = flat @ params["table"]
        else:
            q = MLP(self.hidden_sizes, self.num_actions, self.activation).apply({"params": params}, flat)
        return q.reshape(obs.shape[:-1] + (self.num_actions,))


def boltzmann_log_probs(q: jax.Array, temperature: float) -> jax.Array:
    """log softmax(q / temperature) over the last axis: [..., A]."""
    return jax.nn.log_softmax(q / temperature, axis=-1)


def greedy_mask(q: jax.Array) -> jax.Array:
    """1.0 on the actions of maximal value, 0.0 elsewhere: [..., A]."""
    return (q >= jnp.max(q, axis=-1, keepdims=True)).astype(q.dtype)


def epsilon_greedy_log_probs(q: jax.Array, epsilon: float) -> jax.Array:
    """log of (1 - eps) uniform over the greedy actions + eps uniform over all: [..., A]."""
    mask = greedy_mask(q)
    A = q.shape[-1]
    probs = (1.0 - epsilon) * mask / jnp.sum(mask, axis=-1, keepdims=True) + epsilon / A
    return jnp.log(probs)
