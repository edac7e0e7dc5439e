import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import ConfigError
from jaxmeta.envs import BernoulliBandit, Navigation2D, TabularMDP, make
from jaxmeta.envs.navigation import NavTask
from jaxmeta.rollout import episode_returns, rollout_episodes


def test_navigation_step_matches_hand_computation():
    env = Navigation2D()
    task = NavTask(jnp.array([0.3, -0.2]))
    state, ts = env.reset(jax.random.PRNGKey(0), task)
    np.testing.assert_array_equal(ts.obs, [0.0, 0.0])
    state, ts = env.step(jax.random.PRNGKey(1), state, jnp.array([0.5, -0.05]), task)
    np.testing.assert_allclose(ts.obs, [0.1, -0.05])  # clipped to [-0.1, 0.1]
    assert float(ts.reward) == pytest.approx(-np.hypot(0.1 - 0.3, -0.05 + 0.2), rel=1e-6)
    assert not bool(ts.terminated) and not bool(ts.truncated)


def test_navigation_terminates_at_goal_and_truncates_at_horizon():
    env = Navigation2D(horizon=3)
    task = NavTask(jnp.array([0.1, 0.1]))
    state, _ = env.reset(jax.random.PRNGKey(0), task)
    state, ts = env.step(jax.random.PRNGKey(0), state, jnp.array([0.1, 0.1]), task)
    assert bool(ts.terminated) and float(ts.reward) == pytest.approx(0.0, abs=1e-6)
    state, ts = env.step(jax.random.PRNGKey(0), state, jnp.zeros(2), task)
    state, ts = env.step(jax.random.PRNGKey(0), state, jnp.zeros(2), task)
    assert bool(ts.truncated)


def test_navigation_goals_are_uniform_in_the_square():
    env = Navigation2D()
    goals = env.task_distribution().sample_batch(jax.random.PRNGKey(0), 4000).goal
    assert goals.shape == (4000, 2)
    assert float(goals.min()) >= -0.5 and float(goals.max()) <= 0.5
    np.testing.assert_allclose(goals.mean(0), [0.0, 0.0], atol=0.02)
    np.testing.assert_allclose(goals.var(0), [1 / 12, 1 / 12], rtol=0.08)


def test_rollout_masks_steps_after_termination():
    env = Navigation2D(horizon=6)
    task = NavTask(jnp.array([0.2, 0.0]))
    act = lambda params, obs, key: (jnp.tile(jnp.array([0.1, 0.0]), (obs.shape[0], 1)), jnp.zeros(obs.shape[0]))
    traj = rollout_episodes(env, act, None, task, jax.random.PRNGKey(0), num_episodes=3)
    np.testing.assert_array_equal(traj.valid[:, 0], [1, 1, 0, 0, 0, 0])  # goal reached at step 2
    np.testing.assert_allclose(traj.reward[:, 0], [-0.1, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(episode_returns(traj), [-0.1] * 3, atol=1e-6)


def test_bandit_rewards_have_the_arm_means():
    env = BernoulliBandit(num_arms=3, horizon=1)
    task = env.task_distribution().sample(jax.random.PRNGKey(0))
    state, _ = env.reset(jax.random.PRNGKey(0), task)
    keys = jax.random.split(jax.random.PRNGKey(1), 20000)
    for arm in range(3):
        r = jax.vmap(lambda k: env.step(k, state, arm, task)[1].reward)(keys)
        assert float(r.mean()) == pytest.approx(float(task.probs[arm]), abs=0.015)
    _, ts = env.step(keys[0], state, 0, task)
    assert bool(ts.truncated)
    probs = env.task_distribution().sample_batch(jax.random.PRNGKey(2), 5000).probs
    assert probs.shape == (5000, 3) and float(probs.mean()) == pytest.approx(0.5, abs=0.01)


def test_tabular_mdp_tasks_and_dynamics():
    env = TabularMDP()
    task = env.task_distribution().sample(jax.random.PRNGKey(0))
    np.testing.assert_allclose(task.transitions.sum(-1), np.ones((10, 5)), rtol=1e-5)
    many = env.task_distribution().sample_batch(jax.random.PRNGKey(1), 2000)
    assert float(many.reward_mean.mean()) == pytest.approx(1.0, abs=0.02)
    assert float(many.reward_mean.std()) == pytest.approx(1.0, abs=0.02)
    state, ts = env.reset(jax.random.PRNGKey(0), task)
    np.testing.assert_array_equal(ts.obs, jax.nn.one_hot(0, 10))
    keys = jax.random.split(jax.random.PRNGKey(3), 20000)
    nxt = jax.vmap(lambda k: env.step(k, state, 2, task))(keys)
    counts = np.bincount(np.asarray(nxt[0].s), minlength=10) / 20000
    np.testing.assert_allclose(counts, task.transitions[0, 2], atol=0.015)
    assert float(nxt[1].reward.mean()) == pytest.approx(float(task.reward_mean[0, 2]), abs=0.03)
    assert float(nxt[1].reward.std()) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize(
    "factory,kw,field",
    [
        (Navigation2D, {"horizon": 0}, "horizon"),
        (Navigation2D, {"low": 1.0, "high": 0.0}, "high"),
        (Navigation2D, {"max_action": 0.0}, "max_action"),
        (BernoulliBandit, {"num_arms": 1}, "num_arms"),
        (BernoulliBandit, {"horizon": 0}, "horizon"),
        (TabularMDP, {"num_states": 1}, "num_states"),
        (TabularMDP, {"num_actions": 0}, "num_actions"),
        (TabularMDP, {"horizon": -1}, "horizon"),
    ],
)
def test_env_configs_reject_bad_values(factory, kw, field):
    with pytest.raises(ConfigError, match=field) as e:
        factory(**kw)
    assert e.value.field == field


def test_make_unknown_env_names_known_ones():
    with pytest.raises(ValueError, match="navigation2d"):
        make("nope")
