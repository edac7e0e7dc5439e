"""Model-predictive control planners as pure functions: random shooting and CEM.

Both score candidate action sequences by rolling them out through a dynamics function
and summing a known reward: `jax.vmap` over candidates, `lax.scan` over the horizon.
They return the best sequence; MPC executes its first action and plans again at the
next step (Nagabandi et al. 2018; GrBAL, Nagabandi, Clavera et al. 2019).

- Random shooting: N sequences uniform in the action box, the best one kept.
- Cross-entropy method (Rubinstein 1999; as in PETS, Chua et al. 2018): a diagonal
  Gaussian over sequences, refitted `num_iterations` times to the `num_elites` best of
  N samples (clipped to the box), with the new mean and std mixed into the old by
  1 - alpha.

`dynamics(obs [D], action [A]) -> next_obs [D]`,
`reward(obs [D], action [A], next_obs [D]) -> []` and the optional
`done(obs, action, next_obs) -> bool` (no reward is counted after it) are closures (a learned model with
its parameters, an environment's `transition_reward` with its task), so the planners
work with any model. Every array follows the dtype of `obs`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Dynamics = Callable[[jax.Array, jax.Array], jax.Array]
Reward = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
Done = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class Plan(NamedTuple):
    action: jax.Array  # [A] the first action of the best sequence (what MPC executes)
    actions: jax.Array  # [H, A] the best sequence
    value: jax.Array  # [] its predicted return


def sequence_returns(obs, actions, dynamics: Dynamics, reward: Reward, done: Done | None = None) -> jax.Array:
    """Predicted return of each sequence actions [N, H, A] from obs [D]: [N].

    With `done`, rewards after the first predicted termination are not counted.
    """

    def one(seq):
        def body(carry, a):
            o, alive = carry
            o2 = dynamics(o, a)
            r = reward(o, a, o2) * alive
            if done is not None:
                alive = alive * (1 - done(o, a, o2).astype(alive.dtype))
            return (o2, alive), r

        return jnp.sum(jax.lax.scan(body, (obs, jnp.ones((), obs.dtype)), seq)[1])

    return jax.vmap(one)(actions)


def _box(low, high, shape, dtype):
    return jnp.broadcast_to(jnp.asarray(low, dtype), shape), jnp.broadcast_to(jnp.asarray(high, dtype), shape)


def random_shooting(key, obs, dynamics: Dynamics, reward: Reward, *, num_candidates: int, horizon: int,
                    low, high, action_dim: int, done: Done | None = None) -> Plan:
    """The best of `num_candidates` uniform random sequences of `horizon` actions.

    Args:
      key: PRNG key; obs: [D] the current observation.
      dynamics, reward: see the module docstring.
      low, high: the action box (scalars or [A]); action_dim: A.
      done: (obs, action, next_obs) -> bool, the known termination (optional).
    """
    lo, hi = _box(low, high, (horizon, action_dim), obs.dtype)
    actions = jax.random.uniform(key, (num_candidates, horizon, action_dim), obs.dtype, lo, hi)  # [N, H, A]
    returns = sequence_returns(obs, actions, dynamics, reward, done)  # [N]
    best = jnp.argmax(returns)
    return Plan(actions[best, 0], actions[best], returns[best])


def cem(key, obs, dynamics: Dynamics, reward: Reward, *, num_candidates: int, horizon: int, low, high,
        action_dim: int, num_iterations: int = 5, num_elites: int | None = None, alpha: float = 0.1,
        init_mean=None, init_std=None, done: Done | None = None) -> Plan:
    """Cross-entropy method over sequences of `horizon` actions.

    Args:
      num_elites: sequences refitted to per iteration (default: 10% of the candidates).
      alpha: weight of the previous mean/std in each refit (0: replace them).
      init_mean, init_std: [H, A] the starting distribution (default: the box's centre
        and half its width), e.g. the previous plan shifted by one step.
    Returns:
      The best sequence sampled in any iteration (its first action is executed).
    """
    dtype = obs.dtype
    lo, hi = _box(low, high, (horizon, action_dim), dtype)
    num_elites = max(1, num_candidates // 10) if num_elites is None else num_elites
    mean = (lo + hi) / 2 if init_mean is None else jnp.asarray(init_mean, dtype)
    std = (hi - lo) / 2 if init_std is None else jnp.asarray(init_std, dtype)

    def body(carry, k):
        mean, std, best_seq, best_val = carry
        eps = jax.random.normal(k, (num_candidates, horizon, action_dim), dtype)
        actions = jnp.clip(mean + std * eps, lo, hi)  # [N, H, A]
        returns = sequence_returns(obs, actions, dynamics, reward, done)  # [N]
        top_val, top = jax.lax.top_k(returns, num_elites)
        elites = actions[top]  # [n_e, H, A]
        mean = alpha * mean + (1 - alpha) * jnp.mean(elites, axis=0)
        std = alpha * std + (1 - alpha) * jnp.std(elites, axis=0)
        better = top_val[0] > best_val
        best_seq = jnp.where(better, elites[0], best_seq)
        best_val = jnp.where(better, top_val[0], best_val)
        return (mean, std, best_seq, best_val), None

    init = (mean, std, mean, jnp.asarray(-jnp.inf, dtype))
    (mean, std, best_seq, best_val), _ = jax.lax.scan(body, init, jax.random.split(key, num_iterations))
    return Plan(best_seq[0], best_seq, best_val)
