"""Learned dynamics: an ensemble of MLPs predicting the normalised state change.

Each member f_k maps a normalised (observation, action) to the normalised change of
the observation, so next_obs = obs + delta_mean + delta_std * f_k(norm(obs), norm(a))
(Nagabandi et al. 2018, "Neural Network Dynamics for Model-Based Deep RL with Model-Free
Fine-Tuning"; the ensemble of MB-MPO, Clavera et al. 2018). The members are one flax
MLP whose parameters carry a leading member axis, evaluated with `jax.vmap`.

`fit` trains the members by Adam (optax) inside one jittable function, with a
per-member validation split and early stopping (the setting of MB-MPO's code: 20% of
the data held out per model, training stops when the validation loss has not improved
for `patience` epochs, and the best parameters are kept). Every member samples its own
minibatches with replacement from its own training split (a bootstrap). The loss is
given per item, so the same trainer fits transitions (MSE of the normalised change) and
GrBAL's trajectory segments (a loss through an inner adaptation step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxmeta.config import check_choice, check_float, check_int, check_sizes
from jaxmeta.networks import ACTIVATIONS, MLP
from jaxmeta.types import Params, PRNGKey

# A normalised predicted change is clipped to this many standard deviations, so an
# imagined rollout that leaves the data cannot overflow.
MAX_NORMALISED_DELTA = 10.0


@dataclass(frozen=True)
class DynamicsConfig:
    """Dynamics-model fields shared by MB-MPO and GrBAL (prefixed `model_`, so they sit
    beside a policy's fields in one config). Defaults follow MB-MPO's reference
    settings: 2 x 512 ReLU, Adam 1e-3, 20% of the data held out per member."""

    model_hidden_sizes: tuple[int, ...] = (512, 512)
    model_activation: str = "relu"
    model_lr: float = 1e-3
    model_batch_size: int = 256  # items per minibatch
    model_max_epochs: int = 50  # passes over a member's training split per fit, at most
    model_max_steps_per_epoch: int = 200  # minibatch steps per pass, at most
    model_patience: int = 5  # epochs without a better validation loss before a member stops
    model_valid_fraction: float = 0.2
    model_valid_size: int = 2048  # validation items evaluated per epoch (a fixed sample of the split)
    buffer_episodes: int = 1000  # replay capacity in episodes (oldest overwritten)

    def __post_init__(self):
        check_sizes("model_hidden_sizes", self.model_hidden_sizes)
        check_choice("model_activation", self.model_activation, tuple(ACTIVATIONS))
        check_float("model_lr", self.model_lr, 0.0, 10.0, low_open=True)
        check_int("model_batch_size", self.model_batch_size, 1, 1_000_000)
        check_int("model_max_epochs", self.model_max_epochs, 1, 100_000)
        check_int("model_max_steps_per_epoch", self.model_max_steps_per_epoch, 1, 1_000_000)
        check_int("model_patience", self.model_patience, 1, 100_000)
        check_float("model_valid_fraction", self.model_valid_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_int("model_valid_size", self.model_valid_size, 1, 10_000_000)
        check_int("buffer_episodes", self.buffer_episodes, 1, 10_000_000)

    def fit_settings(self) -> dict:
        """Keyword arguments of `fit` from these fields."""
        return dict(lr=self.model_lr, batch_size=self.model_batch_size, max_epochs=self.model_max_epochs,
                    max_steps_per_epoch=self.model_max_steps_per_epoch, patience=self.model_patience,
                    valid_fraction=self.model_valid_fraction, valid_size=self.model_valid_size)


class Normalizer(NamedTuple):
    """Means and standard deviations of the model's inputs and of its target."""

    obs_mean: jax.Array  # [D]
    obs_std: jax.Array  # [D]
    action_mean: jax.Array  # [A]
    action_std: jax.Array  # [A]
    delta_mean: jax.Array  # [D] of next_obs - obs
    delta_std: jax.Array  # [D]


def identity_normalizer(obs_dim: int, action_dim: int, dtype=jnp.float32) -> Normalizer:
    z, o = lambda n: jnp.zeros((n,), dtype), lambda n: jnp.ones((n,), dtype)
    return Normalizer(z(obs_dim), o(obs_dim), z(action_dim), o(action_dim), z(obs_dim), o(obs_dim))


def _masked_moments(x, w, min_std: float = 1e-6):
    """Mean and std of the rows of x [N, F] weighted by w [N] (std floored at min_std)."""
    n = jnp.maximum(jnp.sum(w), 1.0)
    mean = jnp.sum(x * w[:, None], axis=0) / n
    var = jnp.sum(jnp.square(x - mean) * w[:, None], axis=0) / n
    return mean, jnp.maximum(jnp.sqrt(var), min_std)


def fit_normalizer(obs, action, next_obs, mask) -> Normalizer:
    """Statistics of the transitions where mask [N] is 1 (obs [N, D], action [N, A])."""
    mask = mask.astype(obs.dtype)
    om, os_ = _masked_moments(obs, mask)
    am, as_ = _masked_moments(action, mask)
    dm, ds = _masked_moments(next_obs - obs, mask)
    return Normalizer(om, os_, am, as_, dm, ds)


class ModelState(NamedTuple):
    """What a learner keeps of its model: the members' parameters and the normaliser."""

    params: Params  # leaves [K, ...]
    normalizer: Normalizer


class FitInfo(NamedTuple):
    val_loss: jax.Array  # [K] best validation loss of each member (normalised MSE)
    val_loss_before: jax.Array  # [K] validation loss of the parameters the fit started from
    epochs: jax.Array  # [K] int32 epochs each member trained


@dataclass(frozen=True)
class DynamicsModel:
    """An ensemble of `num_members` MLPs predicting the normalised change of the observation."""

    obs_dim: int
    action_dim: int
    num_members: int = 5
    hidden_sizes: tuple[int, ...] = (512, 512)
    activation: str = "relu"

    @property
    def net(self) -> MLP:
        return MLP(self.hidden_sizes, self.obs_dim, self.activation)

    def init(self, key: PRNGKey) -> Params:
        """Independent initialisations of the members: leaves [K, ...]."""
        x = jnp.zeros((1, self.obs_dim + self.action_dim))
        return jax.vmap(lambda k: self.net.init(k, x)["params"])(jax.random.split(key, self.num_members))

    def init_state(self, key: PRNGKey) -> ModelState:
        params = self.init(key)
        dtype = jax.tree.leaves(params)[0].dtype
        return ModelState(params, identity_normalizer(self.obs_dim, self.action_dim, dtype))

    # ----------------------------------------------------------------- one member
    def normalised_delta(self, params: Params, norm: Normalizer, obs, action):
        """f_k(norm(obs), norm(a)) for one member's params: [..., D]."""
        x = jnp.concatenate([(obs - norm.obs_mean) / norm.obs_std, (action - norm.action_mean) / norm.action_std], -1)
        return self.net.apply({"params": params}, x)

    def predict(self, params: Params, norm: Normalizer, obs, action):
        """next_obs predicted by one member: obs + delta_mean + delta_std * f_k (clipped)."""
        d = jnp.clip(self.normalised_delta(params, norm, obs, action), -MAX_NORMALISED_DELTA, MAX_NORMALISED_DELTA)
        return obs + norm.delta_mean + norm.delta_std * d

    def loss(self, params: Params, norm: Normalizer, obs, action, next_obs):
        """Squared error of the normalised change, mean over observation dims: [...]."""
        target = (next_obs - obs - norm.delta_mean) / norm.delta_std
        return jnp.mean(jnp.square(self.normalised_delta(params, norm, obs, action) - target), axis=-1)

    # ----------------------------------------------------------------- the ensemble
    def predict_all(self, state: ModelState, obs, action):
        """Every member's prediction: [K, ..., D]."""
        return jax.vmap(self.predict, in_axes=(0, None, None, None))(state.params, state.normalizer, obs, action)

    def predict_mean(self, state: ModelState, obs, action):
        """The ensemble mean prediction: [..., D]."""
        return jnp.mean(self.predict_all(state, obs, action), axis=0)

    def predict_member(self, state: ModelState, member, obs, action):
        """Member `member`'s prediction (member: [] int, may be traced)."""
        params = jax.tree.map(lambda p: p[member], state.params)
        return self.predict(params, state.normalizer, obs, action)


def member(params: Params, k: int | jax.Array) -> Params:
    """One member's parameters from the ensemble's (leaves [K, ...] -> [...])."""
    return jax.tree.map(lambda p: p[k], params)


# --------------------------------------------------------------------------- training

# item_loss(member params, idx [B] int32) -> [B] loss of each item
ItemLoss = Callable[[Params, jax.Array], jax.Array]


def _draw(key, cdf, n: int):
    """n indices drawn with replacement in proportion to the weights whose running sum is
    cdf [N] (inverse-CDF sampling: O(n log N) memory-light; uniform if every weight is 0)."""
    N = cdf.shape[0]
    total = cdf[-1]
    k_u, k_r = jax.random.split(key)
    u = jax.random.uniform(k_u, (n,), dtype=cdf.dtype) * total
    idx = jnp.searchsorted(cdf, u, side="right")
    idx = jnp.where(total > 0, idx, jax.random.randint(k_r, (n,), 0, N))
    return jnp.clip(idx, 0, N - 1).astype(jnp.int32)


def sample_indices(key, weights, n: int) -> jax.Array:
    """n indices in [0, N) drawn with replacement in proportion to weights [N] (uniformly
    if every weight is 0), without an [n, N] intermediate."""
    return _draw(key, jnp.cumsum(weights), n)


def fit(key: PRNGKey, params: Params, item_loss: ItemLoss, mask, *, lr: float = 1e-3, batch_size: int = 256,
        max_epochs: int = 50, max_steps_per_epoch: int = 200, patience: int = 5, valid_fraction: float = 0.2,
        valid_size: int = 2048) -> tuple[Params, FitInfo]:
    """Train every member on the items where `mask` is 1, with early stopping.

    Each member holds out its own random `valid_fraction` of the items; an epoch is
    ceil(train items / batch_size) Adam steps (at most `max_steps_per_epoch`) on
    minibatches drawn with replacement from the member's training split, followed by
    the validation loss on a fixed sample of `valid_size` items of its split. A member
    stops when its validation loss has not improved for `patience` epochs; the fit
    stops when every member has (or after `max_epochs`) and returns each member's best
    parameters. Jittable: the epochs are a `lax.while_loop`.

    Args:
      key: PRNG key (splits and minibatches).
      params: the members' starting parameters, leaves [K, ...] (a warm start).
      item_loss: (one member's params, item indices [B]) -> [B] losses.
      mask: [N] 1 for the items that exist (e.g. the filled part of a replay buffer).
    Returns:
      (best params [K, ...], FitInfo).
    """
    K = jax.tree.leaves(params)[0].shape[0]
    N = mask.shape[0]
    dtype = jax.tree.leaves(params)[0].dtype
    mask = mask.astype(dtype)
    k_split, k_valid, k_loop = jax.random.split(key, 3)
    held_out = jax.random.uniform(k_split, (K, N)) < valid_fraction  # [K, N]
    train_w = mask * (~held_out).astype(dtype)  # [K, N]
    valid_w = mask * held_out.astype(dtype)
    # a member with no held-out item validates on its training items
    valid_w = jnp.where(jnp.sum(valid_w, axis=1, keepdims=True) > 0, valid_w, train_w)
    train_cdf = jnp.cumsum(train_w, axis=1)  # [K, N]
    valid_idx = jax.vmap(_draw, in_axes=(0, 0, None))(jax.random.split(k_valid, K), jnp.cumsum(valid_w, axis=1),
                                                      valid_size)  # [K, V]
    steps = jnp.clip(jnp.ceil(jnp.sum(train_w, axis=1).max() / batch_size), 1, max_steps_per_epoch).astype(jnp.int32)

    opt = optax.adam(lr)
    valid_loss = jax.vmap(lambda p, idx: jnp.mean(item_loss(p, idx)))  # [K]

    def sgd_step(i, carry):
        params, opt_state, active, key = carry
        key, k_b = jax.random.split(key)
        idx = jax.vmap(_draw, in_axes=(0, 0, None))(jax.random.split(k_b, K), train_cdf, batch_size)  # [K, B]
        grads = jax.vmap(jax.grad(lambda p, ix: jnp.mean(item_loss(p, ix))))(params, idx)
        updates, new_opt = jax.vmap(opt.update)(grads, opt_state, params)
        new = optax.apply_updates(params, updates)
        keep = lambda a, b: jnp.where(active.reshape((K,) + (1,) * (a.ndim - 1)), a, b)
        return jax.tree.map(keep, new, params), jax.tree.map(keep, new_opt, opt_state), active, key

    def epoch(carry):
        params, opt_state, best, best_loss, since, active, epochs, key = carry
        key, k_e = jax.random.split(key)
        params, opt_state, _, _ = jax.lax.fori_loop(0, steps, sgd_step, (params, opt_state, active, k_e))
        loss = valid_loss(params, valid_idx)
        better = active & (loss < best_loss)
        pick = lambda a, b: jnp.where(better.reshape((K,) + (1,) * (a.ndim - 1)), a, b)
        best = jax.tree.map(pick, params, best)
        best_loss = jnp.where(better, loss, best_loss)
        since = jnp.where(better, 0, since + active.astype(jnp.int32))
        epochs = epochs + active.astype(jnp.int32)
        active = active & (since < patience)
        return params, opt_state, best, best_loss, since, active, epochs, key

    def cond(carry):
        return jnp.any(carry[5]) & (jnp.max(carry[6]) < max_epochs)

    loss0 = valid_loss(params, valid_idx)
    zeros = jnp.zeros((K,), jnp.int32)
    init = (params, jax.vmap(opt.init)(params), params, loss0, zeros, jnp.ones((K,), bool), zeros, k_loop)
    _, _, best, best_loss, _, _, epochs, _ = jax.lax.while_loop(cond, epoch, init)
    return best, FitInfo(best_loss, loss0, epochs)


def transition_loss(model: DynamicsModel, norm: Normalizer, obs, action, next_obs) -> ItemLoss:
    """The item loss of `fit` for flat transitions (obs [N, D], action [N, A], next_obs [N, D])."""

    def item_loss(params, idx):
        return model.loss(params, norm, obs[idx], action[idx], next_obs[idx])

    return item_loss
