"""Classic baselines match known values on hand-built cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta.envs import BernoulliBandit, TabularMDP
from jaxmeta.envs.bandits import BanditTask
from jaxmeta.envs.tabular_mdp import MDPTask
from jaxmeta.evaluation import (
    bandit_baseline, bandit_trial, baselines, psrl_baseline, random_baseline, value_iteration,
)

ENV2 = BernoulliBandit(num_arms=2)
N = 100  # pulls per trial


def _tasks(probs, num=200):
    return BanditTask(jnp.broadcast_to(jnp.asarray(probs, jnp.float32), (num, len(probs))))


def _best_fraction(strategy, probs=(1.0, 0.0), best=0, num=200):
    """Fraction of pulls of the best arm; with rewards 1/0 it equals reward / pulls."""
    tasks = _tasks(probs, num)
    if best == 1:
        tasks = BanditTask(tasks.probs[:, ::-1])
    return float(bandit_baseline(ENV2, tasks, jax.random.PRNGKey(0), N, strategy).returns.sum()) / N


@pytest.mark.parametrize("strategy", ["ucb1", "thompson"])
def test_ucb1_and_thompson_find_near_deterministic_best_arm(strategy):
    assert _best_fraction(strategy) > 0.9
    assert _best_fraction(strategy, best=1) > 0.9  # not an arm-index bias


def test_ucb1_pull_count_on_near_deterministic_bandit():
    # A 0.99 / 0.01 bandit: UCB1 pulls the bad arm O(log n) times.
    tasks = _tasks((0.99, 0.01))
    per_pull = float(bandit_baseline(ENV2, tasks, jax.random.PRNGKey(1), N, "ucb1").returns.sum()) / N
    best_frac = (per_pull - 0.01) / 0.98
    assert best_frac > 0.9


def test_greedy_known_value():
    # Greedy on the Beta(1, 1) posterior mean, no forced first pulls: the first pull is a
    # tie; a paying arm (mean 2/3 after it) is kept, a non-paying one (1/3) is left for the
    # other. So N or N - 1, each with probability 1/2.
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    r = jax.vmap(lambda k: bandit_trial(ENV2, "greedy", BanditTask(jnp.array([0.0, 1.0])), k, N))(keys)
    assert r.shape == (64, N)  # one-pull episodes
    totals = np.asarray(r.sum(axis=1))
    assert set(totals.tolist()) == {N - 1.0, float(N)}


def test_epsilon_greedy_and_random_expected_values():
    eps = 0.1
    eg = float(bandit_baseline(ENV2, _tasks((1.0, 0.0), 400), jax.random.PRNGKey(0), N, "epsilon_greedy",
                               eps).returns.sum())
    expected = N * (1.0 - eps / 2) - 0.5 * (1.0 - eps / 2)  # eps/2 wasted per pull, the first pull a tie
    assert abs(eg - expected) < 1.5
    rnd = _best_fraction("random", num=400) * N
    assert abs(rnd - N / 2) < 2.0
    # The generic random baseline (through rollout_trials) agrees with the bandit one.
    probs = jax.random.uniform(jax.random.PRNGKey(5), (300, 5))
    env5 = BernoulliBandit(num_arms=5)
    generic = float(random_baseline(env5, BanditTask(probs), jax.random.PRNGKey(6), 20).returns.sum())
    assert abs(generic - 20 * float(probs.mean())) < 0.5


def test_jit_equals_no_jit():
    tasks = _tasks((0.7, 0.3), 16)
    f = lambda k: bandit_baseline(ENV2, tasks, k, 20, "thompson").per_task
    np.testing.assert_array_equal(f(jax.random.PRNGKey(0)), jax.jit(f)(jax.random.PRNGKey(0)))


def test_value_iteration_known_values():
    # Two states, two actions: action 1 moves to state 1 (reward 0), action 0 stays
    # (reward 1 in state 1, 0 in state 0). With H = 3 from state 0: go, then stay twice = 2.
    P = jnp.zeros((2, 2, 2)).at[:, 0, :].set(jnp.eye(2)).at[:, 1, 1].set(1.0)
    R = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    q = value_iteration(P, R, 3)  # [H, S, A]
    np.testing.assert_allclose(q[0, 0], [1.0, 2.0])
    np.testing.assert_allclose(q[0, 1], [3.0, 2.0])
    np.testing.assert_allclose(q[2], [[0.0, 0.0], [1.0, 0.0]])


def test_psrl_learns_the_known_mdp():
    # Deterministic 2-state MDP above, with N(R, 1) rewards: optimal episode return 2
    # (H=3) vs 1/2 * ... for random. PSRL should approach the optimum within a trial.
    env = TabularMDP(num_states=2, num_actions=2, horizon=3)
    P = jnp.zeros((2, 2, 2)).at[:, 0, :].set(jnp.eye(2)).at[:, 1, 1].set(1.0)
    R = jnp.array([[0.0, 0.0], [3.0, 0.0]])  # optimal return: 0 + 3 + 3 = 6
    tasks = MDPTask(jnp.broadcast_to(P, (200, 2, 2, 2)), jnp.broadcast_to(R, (200, 2, 2)))
    curve = psrl_baseline(env, tasks, jax.random.PRNGKey(0), 20)
    assert float(curve.returns[-5:].mean()) > 5.5
    rnd = random_baseline(env, tasks, jax.random.PRNGKey(1), 20)
    assert float(rnd.returns.mean()) < 4.0
    assert float(curve.returns[-5:].mean()) > float(curve.returns[0])


def test_baselines_dispatch_on_env():
    env = TabularMDP(num_states=3, num_actions=2, horizon=4)
    tasks = env.task_distribution().sample_batch(jax.random.PRNGKey(0), 8)
    out = baselines(env, tasks, jax.random.PRNGKey(1), 3, num_tune_tasks=8)
    assert list(out) == ["Random", "PSRL", "UCRL2", "BEB", "eps-Greedy", "Greedy"]  # RL^2 Table 2's columns
    assert out["PSRL"].per_task.shape == (8, 3)
    # (the bandit set, RL^2 Table 1's columns, is checked in test_baselines_papers.py)
