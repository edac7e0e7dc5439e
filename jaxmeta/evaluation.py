"""Classic baselines on held-out tasks, in pure JAX, as adaptation curves.

Every baseline plays one trial of `num_episodes` episodes on each task of a batch and
returns an `AdaptationCurve` whose entry k is the mean return of episode k, the same
shape as a black-box learner's `evaluate`, so they can be tabulated side by side.

Bandits (the RL^2 paper's baselines, Duan et al. 2016): random, greedy,
epsilon-greedy, UCB1 (Auer et al. 2002) and Thompson sampling with Beta(1, 1) priors
(Thompson 1933). Tabular MDPs: random and posterior sampling for RL (PSRL, Osband et
al. 2013) with Dirichlet(1) transition and N(1, 1) reward-mean priors, matching how
`TabularMDP` samples tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxmeta.envs.bandits import BanditTask, BernoulliBandit
from jaxmeta.envs.base import Discrete, MetaEnv, Space
from jaxmeta.envs.tabular_mdp import MDPTask, TabularMDP
from jaxmeta.rollout import Collector, JaxCollector, trial_episode_returns
from jaxmeta.types import AdaptationCurve, PRNGKey, Task

BANDIT_STRATEGIES = ("random", "greedy", "epsilon_greedy", "ucb1", "thompson")
MDP_STRATEGIES = ("random", "psrl")


def _curve(per_task: jax.Array) -> AdaptationCurve:
    return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)


# --------------------------------------------------------------------------- bandits


def bandit_choose(strategy: str, key: PRNGKey, counts: jax.Array, successes: jax.Array,
                  epsilon: float = 0.1) -> jax.Array:
    """The arm a classic strategy pulls given per-arm pull and success counts.

    Greedy, epsilon-greedy and UCB1 pull every untried arm once first; ties are broken
    uniformly at random.

    Args:
      strategy: one of BANDIT_STRATEGIES.
      counts: [K] pulls of each arm so far; successes: [K] rewards summed per arm.
    Returns:
      [] int32 arm index.
    """
    K = counts.shape[0]
    k_tie, k_eps, k_arm, k_ts = jax.random.split(key, 4)
    tie = 1e-6 * jax.random.uniform(k_tie, (K,))
    mean = successes / jnp.maximum(counts, 1.0)  # [K]
    untried = counts == 0
    if strategy == "random":
        return jax.random.randint(k_arm, (), 0, K)
    if strategy in ("greedy", "epsilon_greedy"):
        greedy = jnp.argmax(jnp.where(untried, jnp.inf, mean + tie))
        if strategy == "greedy":
            return greedy
        explore = jax.random.bernoulli(k_eps, epsilon)
        return jnp.where(explore, jax.random.randint(k_arm, (), 0, K), greedy)
    if strategy == "ucb1":
        t = jnp.maximum(jnp.sum(counts), 1.0)
        bonus = jnp.sqrt(2.0 * jnp.log(t) / jnp.maximum(counts, 1.0))
        return jnp.argmax(jnp.where(untried, jnp.inf, mean + bonus) + tie)
    if strategy == "thompson":
        theta = jax.random.beta(k_ts, 1.0 + successes, 1.0 + counts - successes)  # [K]
        return jnp.argmax(theta)
    raise ValueError(f"unknown bandit strategy {strategy!r}; known: {', '.join(BANDIT_STRATEGIES)}")


def bandit_trial(env: BernoulliBandit, strategy: str, task: BanditTask, key: PRNGKey,
                 num_episodes: int, epsilon: float = 0.1) -> jax.Array:
    """One trial of a classic strategy on one bandit task: [n] episode returns."""
    H = env.horizon
    K = env.num_arms
    dtype = task.probs.dtype
    k_reset, k_steps = jax.random.split(key)
    state0, _ = env.reset(k_reset, task)

    def body(c, key):
        counts, successes = c  # [K], [K]
        k_choose, k_env = jax.random.split(key)
        arm = bandit_choose(strategy, k_choose, counts, successes, epsilon)
        _, ts = env.step(k_env, state0, arm, task)  # a bandit's reward ignores its state
        onehot = jax.nn.one_hot(arm, K, dtype=dtype)
        return (counts + onehot, successes + onehot * ts.reward), ts.reward

    zeros = jnp.zeros((K,), dtype)
    _, r_t = lax.scan(body, (zeros, zeros), jax.random.split(k_steps, num_episodes * H))  # [n*H]
    return jnp.sum(r_t.reshape(num_episodes, H), axis=1)


def bandit_baseline(env: BernoulliBandit, tasks: BanditTask, key: PRNGKey, num_episodes: int,
                    strategy: str, epsilon: float = 0.1) -> AdaptationCurve:
    """A classic bandit strategy on a batch of tasks (one trial each)."""
    keys = jax.random.split(key, tasks.probs.shape[0])
    per_task = jax.vmap(lambda t, k: bandit_trial(env, strategy, t, k, num_episodes, epsilon))(tasks, keys)
    return _curve(per_task)


# --------------------------------------------------------------------------- tabular MDPs


def value_iteration(transitions: jax.Array, reward: jax.Array, horizon: int) -> jax.Array:
    """Finite-horizon optimal Q-values.

    Args:
      transitions: [S, A, S]; reward: [S, A] expected rewards.
    Returns:
      [H, S, A] Q-values, Q[h] for step h of an episode.
    """

    def body(v_next, _):
        q = reward + transitions @ v_next  # [S, A]
        return jnp.max(q, axis=-1), q

    _, q = lax.scan(body, jnp.zeros(reward.shape[0], reward.dtype), None, length=horizon)
    return q[::-1]


def psrl_trial(env: TabularMDP, task: MDPTask, key: PRNGKey, num_episodes: int) -> jax.Array:
    """Posterior sampling for RL (Osband et al. 2013) on one task: [n] episode returns.

    Priors match the task distribution: transitions ~ Dirichlet(1), reward means
    ~ N(1, 1) with unit observation noise (conjugate Gaussian posterior).
    """
    S, A, H = env.num_states, env.num_actions, env.horizon
    dtype = task.reward_mean.dtype

    def episode(stats, key):
        trans_counts, r_count, r_sum = stats  # [S, A, S], [S, A], [S, A]
        k_p, k_r, k_reset, k_steps = jax.random.split(key, 4)
        p = jax.random.dirichlet(k_p, 1.0 + trans_counts)  # [S, A, S]
        precision = 1.0 + r_count
        r_mean = (1.0 + r_sum) / precision
        r = r_mean + jax.random.normal(k_r, (S, A), dtype) / jnp.sqrt(precision)
        q = value_iteration(p, r, H)  # [H, S, A]
        state, _ = env.reset(k_reset, task)

        def step(c, xs):
            state, stats = c
            h, k = xs
            s = state.s
            a = jnp.argmax(q[h, s])
            state, ts = env.step(k, state, a, task)
            tc, rc, rs = stats
            stats = (tc.at[s, a, state.s].add(1.0), rc.at[s, a].add(1.0), rs.at[s, a].add(ts.reward))
            return (state, stats), ts.reward

        (_, stats), r_t = lax.scan(step, (state, stats), (jnp.arange(H), jax.random.split(k_steps, H)))
        return stats, jnp.sum(r_t)

    stats = (jnp.zeros((S, A, S), dtype), jnp.zeros((S, A), dtype), jnp.zeros((S, A), dtype))
    _, returns = lax.scan(episode, stats, jax.random.split(key, num_episodes))
    return returns


def psrl_baseline(env: TabularMDP, tasks: MDPTask, key: PRNGKey, num_episodes: int) -> AdaptationCurve:
    """PSRL on a batch of tabular MDP tasks (one trial each)."""
    keys = jax.random.split(key, tasks.reward_mean.shape[0])
    return _curve(jax.vmap(lambda t, k: psrl_trial(env, t, k, num_episodes))(tasks, keys))


# --------------------------------------------------------------------------- any env


@dataclass(frozen=True)
class RandomPolicy:
    """Uniformly random actions (within the bounds of a Box action space), as a trial policy."""

    space: Space

    def act(self, params, carry, x, key):
        del params
        E = x.shape[0]
        space = self.space
        if isinstance(space, Discrete):
            a = jax.random.randint(key, (E,), 0, space.n)
        else:
            a = jax.random.uniform(key, (E,) + tuple(space.shape), minval=space.low, maxval=space.high,
                                   dtype=x.dtype)
        zeros = jnp.zeros((E,), x.dtype)
        return carry, a, zeros, zeros


def random_baseline(env: MetaEnv, tasks: Task, key: PRNGKey, num_episodes: int,
                    collector: Collector | None = None) -> AdaptationCurve:
    """Uniformly random actions on each task (one trial each), through `collector`
    (default: `env`'s jitted rollouts; a host collector plays on its simulator)."""
    collector = JaxCollector(env) if collector is None else collector
    keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
    traj = collector.trials(RandomPolicy(env.action_space).act, (), None, tasks, keys, num_episodes, 1)
    per_task = jax.vmap(lambda t: trial_episode_returns(t, num_episodes)[0])(traj)
    return _curve(per_task)


def baselines(env: MetaEnv, tasks: Task, key: PRNGKey, num_episodes: int,
              collector: Collector | None = None) -> dict[str, AdaptationCurve]:
    """Every classic baseline that applies to `env`, on the same tasks.

    Returns:
      {name: AdaptationCurve}: bandits get random, greedy, epsilon-greedy (0.1), UCB1
      and Thompson sampling; tabular MDPs random and PSRL; other envs random (played
      through `collector` when given, e.g. on a host simulator).
    """
    fns: dict[str, Callable[[PRNGKey], AdaptationCurve]] = {}
    if isinstance(env, BernoulliBandit):
        for s in BANDIT_STRATEGIES:
            fns[s] = lambda k, s=s: bandit_baseline(env, tasks, k, num_episodes, s)
    elif isinstance(env, TabularMDP):
        fns["random"] = lambda k: random_baseline(env, tasks, k, num_episodes)
        fns["psrl"] = lambda k: psrl_baseline(env, tasks, k, num_episodes)
    else:
        fns["random"] = lambda k: random_baseline(env, tasks, k, num_episodes, collector)
    keys = jax.random.split(key, len(fns))
    return {name: fn(k) for (name, fn), k in zip(fns.items(), keys)}

