"""Classic baselines on held-out tasks, in pure JAX, as adaptation curves.

Every baseline plays one trial of `num_episodes` episodes on each task of a batch and
returns an `AdaptationCurve` whose entry k is the mean return of episode k, the same
shape as a black-box learner's `evaluate`, so they can be tabulated side by side.

The baselines are the ones RL^2 (Duan et al. 2016, arXiv 1611.02779) tabulates, defined
as that paper and its authors' scripts define them:

- Bernoulli bandits (Table 1), every posterior a Beta(1 + successes, 1 + failures) as
  `BernoulliBandit` samples arm means ~ U[0, 1]: random; the finite-horizon Gittins index
  (Gittins 1979; computed by calibration against a known arm, `gittins_table`); Thompson
  sampling (Thompson 1933); optimistic Thompson sampling as the RL^2 authors' scripts
  define their OTS column (J posterior samples, the one of highest posterior density acted
  on, J tuned); UCB1 (Auer et al. 2002) on the posterior mean with a tuned bonus scale;
  epsilon-greedy with a tuned epsilon; greedy on the posterior mean. No strategy forces a
  first pull of every arm (the Beta(1, 1) pseudo-counts make every arm's statistics defined
  from the start, as in those scripts). `bandit_choose` also offers "ots_mean", Chapelle &
  Li 2011's optimistic sampling max(posterior sample, posterior mean), which is not the
  paper's column (measured 5.97 against its 6.5 at n = 10, k = 5).
- Tabular MDPs (Table 2), with a Dirichlet(1) transition prior as `TabularMDP` samples
  tasks and a N(REWARD_PRIOR_MEAN, 1) prior on reward means (see below): random; PSRL
  (Osband et al. 2013); UCRL2 (Jaksch et al.
  2010) in its finite-horizon episodic form with extended value iteration over the L1
  confidence set, tuned confidence scale; BEB (Kolter & Ng 2009), posterior-mean model
  plus a tuned bonus beta / (1 + n(s, a)); greedy (value iteration on the posterior-mean
  model); epsilon-greedy (tuned epsilon). The model-based ones plan at the start of every
  episode, with the finite-horizon values of that episode.

  The reward prior: the tasks' reward means are N(1, 1), but the RL^2 authors' baselines
  evidently start their reward estimates at 0. With a N(0, 1) prior (REWARD_PRIOR_MEAN = 0,
  the default) PSRL, greedy and epsilon-greedy land within 0.5 % of Table 2's n = 10 cells
  (PSRL 137.6 vs 138.1; greedy on the empirical model 134.3 vs 134.8, epsilon 0.1: 132.6 vs
  132.8); with the tasks' own prior (pass reward_prior_mean=1.0) PSRL gets 132.7 and greedy
  154.6 (docs/benchmarks.md, "Baselines against RL^2 Tables 1-2").

Tuned constants are chosen by grid search on *training* tasks: a batch drawn from the task
distribution with its own key (`tune_constant`, `tuned_constants`), never the evaluation
tasks, which the tuning functions do not take.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import xlogy

from jaxmeta.envs.bandits import BanditTask, BernoulliBandit
from jaxmeta.envs.base import Discrete, MetaEnv, Space, TaskDistribution
from jaxmeta.envs.tabular_mdp import MDPTask, TabularMDP
from jaxmeta.rollout import Collector, JaxCollector, trial_episode_returns
from jaxmeta.types import AdaptationCurve, PRNGKey, Task

BANDIT_STRATEGIES = ("random", "gittins", "thompson", "optimistic_thompson", "ucb1", "epsilon_greedy", "greedy")
MDP_STRATEGIES = ("random", "psrl", "ucrl2", "beb", "epsilon_greedy", "greedy")
# the papers' column names (RL^2 Tables 1 and 2), as `baselines` returns them
BANDIT_COLUMNS = {"random": "Random", "gittins": "Gittins", "thompson": "TS", "optimistic_thompson": "OTS",
                  "ucb1": "UCB1", "epsilon_greedy": "eps-Greedy", "greedy": "Greedy"}
MDP_COLUMNS = {"random": "Random", "psrl": "PSRL", "ucrl2": "UCRL2", "beb": "BEB", "epsilon_greedy": "eps-Greedy",
               "greedy": "Greedy"}
# the grids the tuned constants are searched over (the RL^2 authors searched c and epsilon
# over {0, 0.1, ..., 1}; these are finer where the optimum lies)
BANDIT_GRIDS = {
    "optimistic_thompson": (1.0, 2.0, 3.0, 5.0, 7.0, 10.0),                     # posterior samples J
    "ucb1": tuple(round(0.05 * i, 2) for i in range(21)),                       # bonus scale c
    "epsilon_greedy": (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),  # epsilon
}
OTS_MAX_SAMPLES = 10  # J is a mask over this many samples, so it can be tuned inside one program
MDP_GRIDS = {
    "ucrl2": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0),  # scale of both confidence radii
    "beb": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),                  # bonus beta
    "epsilon_greedy": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3),      # epsilon
}
# untuned defaults when a tuned strategy is called directly
DEFAULT_PARAM = {"ucb1": 1.0, "epsilon_greedy": 0.1, "optimistic_thompson": 5.0, "ucrl2": 1.0, "beb": 1.0}
UCRL2_DELTA = 0.05  # confidence level of UCRL2's sets (its scale is what gets tuned)
REWARD_PRIOR_MEAN = 0.0  # the MDP baselines' prior mean of a reward mean (the module docstring says why)


def _curve(per_task: jax.Array) -> AdaptationCurve:
    return AdaptationCurve(jnp.mean(per_task, axis=0), per_task)


def argmax_random_tie(key: PRNGKey, x: jax.Array) -> jax.Array:
    """argmax over the last axis of `x` [..., K], ties broken uniformly at random: [...] int32."""
    is_max = x >= jnp.max(x, axis=-1, keepdims=True)
    return jax.random.categorical(key, jnp.where(is_max, 0.0, -jnp.inf)).astype(jnp.int32)


# --------------------------------------------------------------------------- Gittins index


class GittinsTable(NamedTuple):
    """Finite-horizon Gittins indices of a Bernoulli arm with a Beta(1, 1) prior, for every
    state a trial of `horizon` pulls can reach, packed by time (see `gittins_index`).

    values: [T (T + 1) (T + 2) / 6], T = horizon; the entry of (t pulls done, an arm with s
    successes and f failures, s + f <= t) is at t(t+1)(t+2)/6 + n(n+1)/2 + s, n = s + f.
    """

    values: jax.Array


def gittins_table(horizon: int, num_grid: int = 65, dtype=jnp.float32) -> GittinsTable:
    """The finite-horizon Gittins index of every reachable arm state, by calibration.

    The index of an arm with posterior Beta(1 + s, 1 + f) and m pulls left is the rate
    lambda of a known arm that makes the choice between them indifferent when the known arm,
    once chosen, is kept to the end (Gittins 1979; finite-horizon form as in Nino-Mora 2011,
    "Computing a classic index for finite-horizon bandits"): the root of
        g(lambda) = C_m(s, f; lambda) - m lambda,
        C_m = p (1 + W_{m-1}(s+1, f)) + (1 - p) W_{m-1}(s, f+1),  p = (s + 1) / (s + f + 2),
        W_m = max(m lambda, C_m),  W_0 = 0.
    One backward pass over (s, f, m) solves this retirement problem for a grid of
    `num_grid` lambdas in [0, 1] at once, together with dW/dlambda (the expected number of
    pulls spent on the known arm). g is convex, piecewise linear and decreasing in lambda, so
    the root lies in the grid cell where g changes sign, and the larger of the zeros of the
    tangents at the cell's two ends (g's lower envelope there) is the exact root whenever g has
    at most one kink in the cell, and a lower bound within the cell otherwise. With m = 1 the
    index is the posterior mean. Exact here means: the one-armed problem against a known arm
    of rate lambda is solved optimally by pulling the unknown arm iff its index exceeds
    lambda, which tests/test_baselines_papers.py checks against brute force.

    Computed once per horizon on the host in float64 numpy (about G T^3 / 6 state updates;
    measured on the shared 2-core machine under load: 0.08 s at T = 10, 3.7 s at T = 100,
    212 s at T = 500), returned in `dtype`.

    Args:
      horizon: T, the pulls in a trial (episodes times pulls per episode).
      num_grid: G, the lambdas of the grid.
    Returns:
      A GittinsTable.
    """
    T, G = int(horizon), int(num_grid)
    if T < 1 or G < 3:
        raise ValueError(f"horizon must be >= 1 and num_grid >= 3, got {horizon}, {num_grid}")
    lam1 = np.linspace(0.0, 1.0, G)  # [G]
    lam = lam1[:, None, None]  # [G, 1, 1]
    layers = [None] * T  # layers[t]: packed indices of the states at time t (m = T - t left)
    W = np.zeros((G, T + 1, T + 1))  # W_{m-1}(s, f) over the square s, f <= T - m + 1 (W_0 = 0)
    D = np.zeros((G, T + 1, T + 1))  # dW_{m-1}/dlambda
    for m in range(1, T + 1):
        L = T - m  # states at this layer: s + f <= L
        s = np.arange(L + 1)[:, None]
        f = np.arange(L + 1)[None, :]
        p = (s + 1.0) / (s + f + 2.0)  # [L+1, L+1]
        Wf, Df = W[:, :L + 1, 1:L + 2], D[:, :L + 1, 1:L + 2]
        C = W[:, 1:L + 2, :L + 1] - Wf  # C = Wf + p (1 + Ws - Wf)   [G, L+1, L+1]
        C += 1.0
        C *= p
        C += Wf
        dC = D[:, 1:L + 2, :L + 1] - Df  # dC = Df + p (Ds - Df)
        dC *= p
        dC += Df
        keep = C >= m * lam  # pulling the arm is (weakly) better than retiring at lambda
        # the cell [lam_i, lam_i+1] where g = C - m lam changes sign: g(0) >= 0 > g(1) (p < 1)
        i = np.clip(np.sum(keep, axis=0) - 1, 0, G - 2)  # [L+1, L+1]
        take = lambda a, j: np.take_along_axis(a, j[None], axis=0)[0]
        lo, hi = lam1[i], lam1[i + 1]
        z_lo = lo - (take(C, i) - m * lo) / (take(dC, i) - m)  # zero of the tangent at lo
        z_hi = hi - (take(C, i + 1) - m * hi) / (take(dC, i + 1) - m)  # and at hi (dg <= -1)
        index = p if m == 1 else np.clip(np.maximum(z_lo, z_hi), lo, hi)  # m = 1: the posterior mean
        n_idx, s_idx = np.tril_indices(L + 1)  # n = s + f in 0..L, s in 0..n (packing order)
        layers[L] = index[s_idx, n_idx - s_idx]
        W, D = np.maximum(C, m * lam), np.where(keep, dC, float(m))  # [G, L+1, L+1]
    return GittinsTable(jnp.asarray(np.concatenate(layers), dtype))


def gittins_index(table: GittinsTable, t: jax.Array, successes: jax.Array, counts: jax.Array) -> jax.Array:
    """Look up indices: t [] pulls done in the trial; successes, counts [K] per arm. Returns [K]."""
    t = jnp.asarray(t, jnp.int32)
    s = successes.astype(jnp.int32)
    n = counts.astype(jnp.int32)
    return table.values[t * (t + 1) * (t + 2) // 6 + n * (n + 1) // 2 + s]


# --------------------------------------------------------------------------- bandits


def posterior_mean(counts: jax.Array, successes: jax.Array) -> jax.Array:
    """Mean of the Beta(1 + successes, 1 + failures) posterior of each arm: [K]."""
    return (successes + 1.0) / (counts + 2.0)


def bandit_choose(strategy: str, key: PRNGKey, counts: jax.Array, successes: jax.Array, param=None,
                  t: jax.Array | None = None, gittins: GittinsTable | None = None) -> jax.Array:
    """The arm a classic strategy pulls given per-arm pull and success counts.

    Every strategy but random scores the arms from their Beta(1 + s, 1 + f) posteriors and
    pulls the best score, ties broken uniformly at random.

    Args:
      strategy: one of BANDIT_STRATEGIES.
      counts: [K] pulls of each arm so far; successes: [K] rewards summed per arm.
      param: epsilon (epsilon_greedy), the bonus scale c (ucb1) or the number of posterior
        samples J (optimistic_thompson, at most OTS_MAX_SAMPLES); DEFAULT_PARAM when None.
      t: [] pulls done in the trial (ucb1: ln t; gittins: the pulls left).
      gittins: the trial's GittinsTable (gittins).
    Returns:
      [] int32 arm index.
    """
    K = counts.shape[0]
    k_tie, k_eps, k_arm, k_ts = jax.random.split(key, 4)
    mean = posterior_mean(counts, successes)  # [K]
    if param is None:
        param = DEFAULT_PARAM.get(strategy)
    if strategy == "random":
        return jax.random.randint(k_arm, (), 0, K)
    if strategy in ("greedy", "epsilon_greedy"):
        greedy = argmax_random_tie(k_tie, mean)
        if strategy == "greedy":
            return greedy
        explore = jax.random.bernoulli(k_eps, jnp.asarray(param, mean.dtype))
        return jnp.where(explore, jax.random.randint(k_arm, (), 0, K), greedy)
    if strategy == "ucb1":
        # Auer et al. 2002's index mean + c sqrt(2 ln t / n) on the posterior (n + 2 pseudo-pulls)
        log_t = jnp.log(jnp.maximum(jnp.asarray(t, mean.dtype), 1.0))
        return argmax_random_tie(k_tie, mean + param * jnp.sqrt(2.0 * log_t / (counts + 2.0)))
    a, b = 1.0 + successes, 1.0 + counts - successes  # [K] posterior Beta(a, b)
    if strategy in ("thompson", "ots_mean"):
        theta = jax.random.beta(k_ts, a, b, dtype=mean.dtype)  # [K]
        if strategy == "ots_mean":
            theta = jnp.maximum(theta, mean)
        return argmax_random_tie(k_tie, theta)
    if strategy == "optimistic_thompson":
        # J = param samples of all arms; act on the one of highest posterior density
        theta = jax.random.beta(k_ts, a, b, (OTS_MAX_SAMPLES, K), dtype=mean.dtype)  # [J_max, K]
        log_p = jnp.sum(xlogy(a - 1.0, theta) + xlogy(b - 1.0, 1.0 - theta), axis=-1)  # [J_max] (+ const)
        log_p = jnp.where(jnp.arange(OTS_MAX_SAMPLES) < param, log_p, -jnp.inf)
        return argmax_random_tie(k_tie, theta[jnp.argmax(log_p)])
    if strategy == "gittins":
        if gittins is None:
            raise ValueError("the gittins strategy needs its GittinsTable (gittins_table(horizon))")
        return argmax_random_tie(k_tie, gittins_index(gittins, t, successes, counts))
    raise ValueError(f"unknown bandit strategy {strategy!r}; known: {', '.join(BANDIT_STRATEGIES)}")


def bandit_trial(env: BernoulliBandit, strategy: str, task: BanditTask, key: PRNGKey,
                 num_episodes: int, param=None, gittins: GittinsTable | None = None) -> jax.Array:
    """One trial of a classic strategy on one bandit task: [n] episode returns.

    `param` is the strategy's constant (see `bandit_choose`); `gittins` the table for the
    trial's n * horizon pulls (computed here when None and strategy is "gittins").
    """
    H = env.horizon
    K = env.num_arms
    dtype = task.probs.dtype
    if strategy == "gittins" and gittins is None:
        gittins = gittins_table(num_episodes * H, dtype=dtype)
    k_reset, k_steps = jax.random.split(key)
    state0, _ = env.reset(k_reset, task)

    def body(c, xs):
        counts, successes = c  # [K], [K]
        t, key = xs
        k_choose, k_env = jax.random.split(key)
        arm = bandit_choose(strategy, k_choose, counts, successes, param, t, gittins)
        _, ts = env.step(k_env, state0, arm, task)  # a bandit's reward ignores its state
        onehot = jax.nn.one_hot(arm, K, dtype=dtype)
        return (counts + onehot, successes + onehot * ts.reward), ts.reward

    zeros = jnp.zeros((K,), dtype)
    T = num_episodes * H
    _, r_t = lax.scan(body, (zeros, zeros), (jnp.arange(T), jax.random.split(k_steps, T)))  # [n*H]
    return jnp.sum(r_t.reshape(num_episodes, H), axis=1)


def bandit_baseline(env: BernoulliBandit, tasks: BanditTask, key: PRNGKey, num_episodes: int,
                    strategy: str, param=None, gittins: GittinsTable | None = None) -> AdaptationCurve:
    """A classic bandit strategy on a batch of tasks (one trial each; `bandit_trial` builds
    a missing Gittins table once, when the vmapped trial is traced)."""
    keys = jax.random.split(key, tasks.probs.shape[0])
    per_task = jax.vmap(lambda t, k: bandit_trial(env, strategy, t, k, num_episodes, param, gittins))(tasks, keys)
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


def optimistic_transitions(p_hat: jax.Array, radius: jax.Array, v: jax.Array) -> jax.Array:
    """The distribution in the L1 ball ||p - p_hat||_1 <= radius (within the simplex) that
    maximises p . v (Jaksch et al. 2010, Figure 2): move radius / 2 of mass onto the best
    next state, taken from the worst ones first.

    Args:
      p_hat: [..., S] empirical distributions; radius: [...]; v: [S] next-state values.
    Returns:
      [..., S] optimistic distributions.
    """
    order = jnp.argsort(v)  # worst first, best last
    p = p_hat[..., order]  # [..., S]
    add = jnp.minimum(radius / 2.0, 1.0 - p[..., -1])  # [...]
    before = jnp.cumsum(p[..., :-1], axis=-1) - p[..., :-1]  # mass of the worse states
    remove = jnp.clip(add[..., None] - before, 0.0, p[..., :-1])
    p = jnp.concatenate([p[..., :-1] - remove, p[..., -1:] + add[..., None]], axis=-1)
    return jnp.zeros_like(p).at[..., order].set(p)


def extended_value_iteration(p_hat: jax.Array, p_radius: jax.Array, r_opt: jax.Array, horizon: int) -> jax.Array:
    """Finite-horizon extended value iteration (UCRL2, Jaksch et al. 2010): the optimal
    Q-values of the most optimistic MDP in the confidence set, step by step.

    Args:
      p_hat: [S, A, S] empirical transitions; p_radius: [S, A] L1 radii; r_opt: [S, A]
        optimistic rewards.
    Returns:
      [H, S, A] Q-values.
    """

    def body(v_next, _):
        p = optimistic_transitions(p_hat, p_radius, v_next)  # [S, A, S]
        q = r_opt + p @ v_next  # [S, A]
        return jnp.max(q, axis=-1), q

    _, q = lax.scan(body, jnp.zeros(r_opt.shape[0], r_opt.dtype), None, length=horizon)
    return q[::-1]


class MDPStats(NamedTuple):
    """Sufficient statistics of a trial so far."""

    trans_counts: jax.Array  # [S, A, S] transitions seen
    r_count: jax.Array  # [S, A] visits
    r_sum: jax.Array  # [S, A] rewards summed
    t: jax.Array  # [] steps taken in the trial


def posterior_mean_model(stats: MDPStats, reward_prior_mean: float = REWARD_PRIOR_MEAN
                         ) -> tuple[jax.Array, jax.Array]:
    """The posterior-mean MDP: transitions [S, A, S] (Dirichlet(1) posterior) and reward
    means [S, A] (N(reward_prior_mean, 1) prior, unit noise)."""
    S = stats.trans_counts.shape[-1]
    p = (stats.trans_counts + 1.0) / (stats.r_count[..., None] + S)
    r = (reward_prior_mean + stats.r_sum) / (1.0 + stats.r_count)
    return p, r


# a planner maps (stats, key, param) to the episode's Q-values [H, S, A]
Planner = Callable[[MDPStats, PRNGKey, jax.Array], jax.Array]


def _psrl_planner(H, m0):
    def plan(stats, key, param):
        """Posterior sampling for RL (Osband et al. 2013): solve one MDP drawn from the posterior."""
        del param
        S, A = stats.r_count.shape
        dtype = stats.r_sum.dtype
        k_p, k_r = jax.random.split(key)
        p = jax.random.dirichlet(k_p, 1.0 + stats.trans_counts, dtype=dtype)  # [S, A, S]
        precision = 1.0 + stats.r_count
        r = (m0 + stats.r_sum) / precision + jax.random.normal(k_r, (S, A), dtype) / jnp.sqrt(precision)
        return value_iteration(p, r, H)

    return plan


def _greedy_planner(H, m0):
    def plan(stats, key, param):
        """Value iteration on the posterior-mean model (greedy, and epsilon-greedy's greedy part)."""
        del key, param
        return value_iteration(*posterior_mean_model(stats, m0), H)

    return plan


def _beb_planner(H, m0):
    def plan(stats, key, param):
        """BEB (Kolter & Ng 2009): posterior-mean model, reward + beta / (1 + n(s, a))."""
        del key
        p, r = posterior_mean_model(stats, m0)
        return value_iteration(p, r + param / (1.0 + stats.r_count), H)

    return plan


def _ucrl2_planner(H, m0):
    del m0  # frequentist: unvisited pairs start from reward 0 and the uniform distribution

    def plan(stats, key, param):
        """UCRL2 (Jaksch et al. 2010), finite-horizon: extended value iteration over the
        confidence set ||p - p_hat||_1 <= c sqrt(14 S ln(2 A t / delta) / n),
        |r - r_hat| <= c sqrt(7 ln(2 S A t / delta) / (2 n)) (n: visits, at least 1; t: steps
        so far, at least 1), c the tuned scale. Unvisited pairs start from the uniform
        distribution and reward 0."""
        del key
        S, A = stats.r_count.shape
        n = jnp.maximum(stats.r_count, 1.0)  # [S, A]
        t = jnp.maximum(stats.t.astype(n.dtype), 1.0)
        visited = stats.r_count[..., None] > 0
        p_hat = jnp.where(visited, stats.trans_counts / n[..., None], 1.0 / S)  # [S, A, S]
        r_hat = stats.r_sum / n
        d_p = param * jnp.sqrt(14.0 * S * jnp.log(2.0 * A * t / UCRL2_DELTA) / n)
        d_r = param * jnp.sqrt(7.0 * jnp.log(2.0 * S * A * t / UCRL2_DELTA) / (2.0 * n))
        return extended_value_iteration(p_hat, d_p, r_hat + d_r, H)

    return plan


_PLANNERS = {"psrl": _psrl_planner, "greedy": _greedy_planner, "epsilon_greedy": _greedy_planner,
             "beb": _beb_planner, "ucrl2": _ucrl2_planner}


def plan_episode(strategy: str, stats: MDPStats, key: PRNGKey, param, horizon: int,
                 reward_prior_mean: float = REWARD_PRIOR_MEAN) -> jax.Array:
    """The Q-values [H, S, A] a model-based strategy (MDP_STRATEGIES but random) acts on
    for the next episode, given the trial's statistics so far and its constant `param`."""
    if strategy not in _PLANNERS:
        raise ValueError(f"unknown MDP strategy {strategy!r}; known: {', '.join(MDP_STRATEGIES)}")
    return _PLANNERS[strategy](horizon, reward_prior_mean)(stats, key, jnp.asarray(param, stats.r_sum.dtype))


def mdp_trial(env: TabularMDP, strategy: str, task: MDPTask, key: PRNGKey, num_episodes: int,
              param=None, reward_prior_mean: float = REWARD_PRIOR_MEAN) -> jax.Array:
    """One trial of a model-based strategy on one tabular MDP task: [n] episode returns.

    At the start of every episode the strategy plans finite-horizon Q-values [H, S, A] from
    the trial's statistics so far; during the episode it acts greedily on them (ties at
    random), epsilon-greedy with probability `param` of a uniform action.

    Args:
      strategy: one of MDP_STRATEGIES but "random".
      param: the strategy's constant (UCRL2's confidence scale, BEB's beta, epsilon);
        DEFAULT_PARAM when None.
      reward_prior_mean: the prior mean of the reward means (the module docstring says why
        the default is 0 and not the tasks' 1).
    """
    S, A, H = env.num_states, env.num_actions, env.horizon
    dtype = task.reward_mean.dtype
    param = jnp.asarray(DEFAULT_PARAM.get(strategy, 0.0) if param is None else param, dtype)
    epsilon = param if strategy == "epsilon_greedy" else jnp.zeros((), dtype)

    def episode(stats, key):
        k_plan, k_reset, k_steps = jax.random.split(key, 3)
        q = plan_episode(strategy, stats, k_plan, param, H, reward_prior_mean)  # [H, S, A]
        state, _ = env.reset(k_reset, task)

        def step(c, xs):
            state, stats = c
            h, k = xs
            k_tie, k_eps, k_rand, k_env = jax.random.split(k, 4)
            s = state.s
            a = argmax_random_tie(k_tie, q[h, s])
            a = jnp.where(jax.random.bernoulli(k_eps, epsilon), jax.random.randint(k_rand, (), 0, A), a)
            state, ts = env.step(k_env, state, a, task)
            stats = MDPStats(stats.trans_counts.at[s, a, state.s].add(1.0), stats.r_count.at[s, a].add(1.0),
                             stats.r_sum.at[s, a].add(ts.reward), stats.t + 1)
            return (state, stats), ts.reward

        (_, stats), r_t = lax.scan(step, (state, stats), (jnp.arange(H), jax.random.split(k_steps, H)))
        return stats, jnp.sum(r_t)

    stats = MDPStats(jnp.zeros((S, A, S), dtype), jnp.zeros((S, A), dtype), jnp.zeros((S, A), dtype),
                     jnp.zeros((), jnp.int32))
    _, returns = lax.scan(episode, stats, jax.random.split(key, num_episodes))
    return returns


def psrl_trial(env: TabularMDP, task: MDPTask, key: PRNGKey, num_episodes: int,
               reward_prior_mean: float = REWARD_PRIOR_MEAN) -> jax.Array:
    """Posterior sampling for RL (Osband et al. 2013) on one task: [n] episode returns.

    Priors: transitions ~ Dirichlet(1) as the tasks' are, reward means ~
    N(reward_prior_mean, 1) with unit observation noise (conjugate Gaussian posterior).
    """
    return mdp_trial(env, "psrl", task, key, num_episodes, reward_prior_mean=reward_prior_mean)


def mdp_baseline(env: TabularMDP, tasks: MDPTask, key: PRNGKey, num_episodes: int, strategy: str,
                 param=None, reward_prior_mean: float = REWARD_PRIOR_MEAN) -> AdaptationCurve:
    """A model-based MDP strategy on a batch of tasks (one trial each)."""
    keys = jax.random.split(key, tasks.reward_mean.shape[0])
    trial = lambda t, k: mdp_trial(env, strategy, t, k, num_episodes, param, reward_prior_mean)
    return _curve(jax.vmap(trial)(tasks, keys))


def psrl_baseline(env: TabularMDP, tasks: MDPTask, key: PRNGKey, num_episodes: int) -> AdaptationCurve:
    """PSRL on a batch of tabular MDP tasks (one trial each)."""
    return mdp_baseline(env, tasks, key, num_episodes, "psrl")


# --------------------------------------------------------------------------- tuning

TUNE_SALT = 0x74756E65  # "tune": training tasks come from fold_in(PRNGKey(tune_seed), TUNE_SALT)
NUM_TUNE_TASKS = 500


def training_key(tune_seed: int = 0) -> PRNGKey:
    """The key of the training tasks and trials the constants are tuned on. Held-out tasks
    are drawn from PRNGKey(eval_seed) (the learners' `eval_tasks`), a different stream."""
    return jax.random.fold_in(jax.random.PRNGKey(tune_seed), TUNE_SALT)


def tune_constant(env: BernoulliBandit | TabularMDP, task_distribution: TaskDistribution, key: PRNGKey,
                  num_episodes: int, strategy: str, grid=None, num_tasks: int = NUM_TUNE_TASKS,
                  dtype=None) -> tuple[jax.Array, jax.Array]:
    """Grid search of a strategy's constant on training tasks (the papers tuned UCB1's and
    epsilon-greedy's constants; RL^2's authors by the mean over their evaluation trials, here
    on a batch drawn with `key`, so the evaluation tasks are never seen).

    Every grid value plays the same `num_tasks` training tasks with the same keys (common
    random numbers), and the best mean trial reward wins. Jittable.

    Args:
      task_distribution: the training tasks' distribution.
      key: the tuning's own key (tasks and trials).
      grid: the candidate constants (default BANDIT_GRIDS / MDP_GRIDS[strategy]).
      dtype: float dtype of the training tasks (default: the distribution's).
    Returns:
      (best constant [], mean trial reward per grid value [G]).
    """
    bandit = isinstance(env, BernoulliBandit)
    grid = (BANDIT_GRIDS if bandit else MDP_GRIDS)[strategy] if grid is None else grid
    k_tasks, k_trials = jax.random.split(key)
    tasks = task_distribution.sample_batch(k_tasks, num_tasks)
    if dtype is not None:
        tasks = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tasks)
    values = jnp.asarray(grid, jax.tree.leaves(tasks)[0].dtype)  # [G]
    run = bandit_baseline if bandit else mdp_baseline
    score = lambda c: jnp.sum(run(env, tasks, k_trials, num_episodes, strategy, c).returns)
    means = lax.map(score, values)  # [G]
    return values[jnp.argmax(means)], means


_TUNED_CACHE: dict = {}


def tuned_constants(env: BernoulliBandit | TabularMDP, num_episodes: int,
                    task_distribution: TaskDistribution | None = None, tune_seed: int = 0,
                    num_tasks: int = NUM_TUNE_TASKS, dtype=jnp.float32) -> dict[str, float]:
    """The tuned constant of every tuned strategy for `env` and trials of `num_episodes`:
    {strategy: value}, from `tune_constant` on training tasks drawn with `training_key(tune_seed)`.

    With the env's own task distribution (`task_distribution` None) the result is cached in
    the process per (env, num_episodes, tune_seed, num_tasks, dtype): a setting is tuned once.
    """
    grids = BANDIT_GRIDS if isinstance(env, BernoulliBandit) else MDP_GRIDS if isinstance(env, TabularMDP) else {}
    cache_key = (env, num_episodes, tune_seed, num_tasks, jnp.dtype(dtype).name)
    if task_distribution is None and cache_key in _TUNED_CACHE:
        return dict(_TUNED_CACHE[cache_key])
    dist = env.task_distribution() if task_distribution is None else task_distribution
    keys = jax.random.split(training_key(tune_seed), max(len(grids), 1))
    # one compiled program for every tuned strategy (see `baselines` on why this jits)
    tune = jax.jit(lambda keys: {name: tune_constant(env, dist, k, num_episodes, name, grid, num_tasks, dtype)[0]
                                 for (name, grid), k in zip(grids.items(), keys)})
    out = {name: float(v) for name, v in tune(keys).items()}
    if task_distribution is None:
        _TUNED_CACHE[cache_key] = dict(out)
    return out


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
              collector: Collector | None = None, *, task_distribution: TaskDistribution | None = None,
              tune_seed: int = 0, num_tune_tasks: int = NUM_TUNE_TASKS) -> dict[str, AdaptationCurve]:
    """Every classic baseline that applies to `env`, on the same tasks, named as the RL^2
    paper's columns.

    Args:
      tasks: the evaluation tasks (leading axis N).
      key: the evaluation trials' key.
      collector: plays the random baseline of an env without its own baselines (e.g. on a
        host simulator).
      task_distribution, tune_seed, num_tune_tasks: where the tuned constants are chosen
        (`tuned_constants`): training tasks from `task_distribution` (default the env's)
        drawn with `training_key(tune_seed)`, never `tasks`.
    Returns:
      {name: AdaptationCurve}: bandits get Random, Gittins, TS, OTS, UCB1, eps-Greedy,
      Greedy (RL^2 Table 1); tabular MDPs Random, PSRL, UCRL2, BEB, eps-Greedy, Greedy
      (Table 2, less OPSRL); other envs Random.
    """
    if not isinstance(env, (BernoulliBandit, TabularMDP)):
        return {"Random": random_baseline(env, tasks, key, num_episodes, collector)}
    dtype = jax.tree.leaves(tasks)[0].dtype
    tuned = tuned_constants(env, num_episodes, task_distribution, tune_seed, num_tune_tasks, dtype)
    table = cached_gittins_table(num_episodes * env.horizon, jnp.dtype(dtype).name) \
        if isinstance(env, BernoulliBandit) else None
    out = _all_baselines(env, num_episodes, tasks, key, {k: jnp.asarray(v, dtype) for k, v in tuned.items()}, table)
    columns = [*BANDIT_COLUMNS.values()] if isinstance(env, BernoulliBandit) else [*MDP_COLUMNS.values()]
    return {name: out[name] for name in columns}  # the papers' order (jit returns dicts sorted)


@lru_cache(maxsize=4)
def cached_gittins_table(horizon: int, dtype: str) -> GittinsTable:
    """`gittins_table` computed once per (horizon, dtype) in the process (seconds at T = 500)."""
    return gittins_table(horizon, dtype=jnp.dtype(dtype))


@partial(jax.jit, static_argnums=(0, 1))
def _all_baselines(env, num_episodes, tasks, key, tuned, table):
    """Every baseline of a bandit or tabular MDP env in one compiled program.

    `baselines` is a host-level entry point (it builds the Gittins table in numpy and caches
    tuned constants), and compiling its seven trials as one program rather than op by op
    halves its cost (measured: 35 s -> 18 s for the bandit set on the shared 2-core machine),
    so it jits here, cached per (env, num_episodes) and shapes; the per-strategy functions
    above stay plain functions for the caller to transform.
    """
    if isinstance(env, BernoulliBandit):
        fns = {BANDIT_COLUMNS[s]: (lambda k, s=s: bandit_baseline(env, tasks, k, num_episodes, s, tuned.get(s),
                                                                  table if s == "gittins" else None))
               for s in BANDIT_STRATEGIES}
    else:
        fns = {"Random": lambda k: random_baseline(env, tasks, k, num_episodes)}
        fns.update({MDP_COLUMNS[s]: (lambda k, s=s: mdp_baseline(env, tasks, k, num_episodes, s, tuned.get(s)))
                    for s in MDP_STRATEGIES[1:]})
    keys = jax.random.split(key, len(fns))
    return {name: fn(k) for (name, fn), k in zip(fns.items(), keys)}
