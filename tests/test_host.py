"""The host collector: CPU simulators stepped in Python give the learners the very
arrays the jitted rollouts give, so every learner runs on them unchanged."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxmeta
from jaxmeta.algorithms.black_box import BlackBox, RL2Config, SNAILConfig
from jaxmeta.algorithms.maml import MAML, MAMLConfig
from jaxmeta.envs import Navigation2D
from jaxmeta.host import HostCollector
from jaxmeta.rollout import JaxCollector


class NumpyNavigation:
    """Navigation2D re-implemented in numpy as a host simulator (deterministic, like the JAX env)."""

    def __init__(self, env: Navigation2D, num_envs: int):
        self.env, self.num_envs = env, num_envs
        self.goal = self.pos = None
        self.resets = []

    def set_tasks(self, tasks):
        assert tasks.goal.shape == (self.num_envs, 2)
        self.goal = np.asarray(tasks.goal)  # computes in the tasks' dtype

    def reset(self, seed):
        self.resets.append(seed)
        self.pos = np.zeros((self.num_envs, 2), self.goal.dtype)
        return self.pos.copy()

    def step(self, action):
        action = np.clip(np.asarray(action, self.goal.dtype), -self.env.max_action, self.env.max_action)
        self.pos = self.pos + action
        delta = self.pos - self.goal
        reward = -np.sqrt(np.sum(delta**2, axis=-1))
        terminated = np.all(np.abs(delta) < self.env.goal_tolerance, axis=-1)
        return self.pos.copy(), reward, terminated


ENV = Navigation2D(horizon=8, goal_tolerance=0.05)


def host(max_envs=None):
    return HostCollector(ENV, lambda n: NumpyNavigation(ENV, n), max_envs)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("max_envs", [None, 8])  # 8: tasks run in chunks of 2
def test_host_episodes_equal_jitted_episodes(max_envs):
    m = MAML(ENV, ENV.task_distribution(), MAMLConfig(hidden_sizes=(8,), meta_batch_size=5, num_episodes=4))
    params = m.policy.init(jax.random.PRNGKey(0))
    tasks = ENV.task_distribution().sample_batch(jax.random.PRNGKey(1), 5)
    tasks = tasks._replace(goal=tasks.goal * 0.1)  # near the start: some episodes terminate early
    keys = jax.random.split(jax.random.PRNGKey(2), 5)
    want = JaxCollector(ENV).episodes(m.policy.act, params, tasks, keys, 4)
    got = host(max_envs).episodes(m.policy.act, params, tasks, keys, 4)
    assert_trees_close(got, want)
    assert float(jnp.min(want.valid)) == 0.0  # padding after termination is reproduced too


@pytest.mark.parametrize("max_envs", [None, 8])  # 8: tasks run in chunks of 2, each prepared on its own
def test_prepared_episodes_equal_unprepared(max_envs):
    m = MAML(ENV, ENV.task_distribution(), MAMLConfig(hidden_sizes=(8,), meta_batch_size=5, num_episodes=4))
    params = m.policy.init(jax.random.PRNGKey(0))
    tasks = ENV.task_distribution().sample_batch(jax.random.PRNGKey(1), 5)
    keys = jax.random.split(jax.random.PRNGKey(2), 5)
    plain, prepared = host(max_envs), host(max_envs)
    want = plain.episodes(m.policy.act, params, tasks, keys, 4)
    prepared.prepare(keys, 4)
    assert len(prepared._plans) == (1 if max_envs is None else 3)
    got = prepared.episodes(m.policy.act, params, tasks, keys, 4)
    assert not prepared._plans  # every prepared chunk was used, once
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
    n = 20 if max_envs is None else 8
    assert prepared.sim(n).resets == plain.sim(n).resets  # the same simulator seeds


def test_host_trials_equal_jitted_trials():
    bb = BlackBox(ENV, ENV.task_distribution(), RL2Config(episodes_per_trial=3, hidden_size=8, meta_batch_size=3,
                                                               num_minibatches=1))
    params = bb.model.init(jax.random.PRNGKey(0))
    tasks = ENV.task_distribution().sample_batch(jax.random.PRNGKey(1), 3)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    carry = bb.model.initial_carry(2)
    want = JaxCollector(ENV).trials(bb.act, carry, params, tasks, keys, 3, 2)
    collector = host()
    got = collector.trials(bb.act, carry, params, tasks, keys, 3, 2)
    assert_trees_close(got, want, rtol=1e-4, atol=1e-5)
    assert len(collector.sim(6).resets) == 3  # one reset per episode, memory kept across them


def to64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, tree)


@pytest.mark.parametrize("outer", ["trpo", "promp"])
def test_maml_sample_and_update_on_host_equal_jitted(outer):
    # float64: TRPO's conjugate gradient amplifies float32 rounding differences
    with jax.enable_x64(True):
        config = MAMLConfig(hidden_sizes=(8,), meta_batch_size=3, num_episodes=3, num_eval_tasks=2, outer=outer,
                            num_inner_steps=2)
        jitted = jaxmeta.maml(ENV, config=config)
        on_host = jaxmeta.maml(ENV, config=config, collector=host())
        assert jitted.jittable and not on_host.jittable
        state = to64(jitted.init(jax.random.PRNGKey(0)))
        key = jax.random.PRNGKey(1)
        want = jax.jit(jitted.sample)(state, key)
        got = on_host.sample(state, key)
        assert got.valid.traj.obs.dtype == jnp.float64  # the host batch follows the parameters' dtype
        assert_trees_close(got, want, rtol=1e-9, atol=1e-9)
        # the update is the same function whatever collected the batch: bitwise on one batch
        new_want, met_want = jax.jit(jitted.update)(state, want)
        new_got, met_got = jax.jit(on_host.update)(state, want)
        for a, b in zip(jax.tree.leaves((new_want, met_want)), jax.tree.leaves((new_got, met_got))):
            np.testing.assert_array_equal(a, b)
        new_got, _ = jax.jit(on_host.update)(state, got)
        # TRPO's conjugate gradient on this tiny, nearly singular problem amplifies the
        # batches' 1e-14 differences to ~1e-4 of the step (how much depends on the
        # numpy/XLA build), so compare the steps as vectors, not entry by entry
        step = lambda new: ravel_pytree(new.meta)[0] - ravel_pytree(state.meta)[0]
        want_step, got_step = step(new_want), step(new_got)
        assert float(jnp.linalg.norm(want_step)) > 1e-3
        rel = float(jnp.linalg.norm(got_step - want_step)) / float(jnp.linalg.norm(want_step))
        assert rel < 1e-3, rel
        curve = on_host.evaluate(new_got, jax.random.PRNGKey(3))
        assert curve.returns.shape == (3,) and curve.per_task.shape == (2, 3)


@pytest.mark.parametrize("config", [
    RL2Config(episodes_per_trial=2, hidden_size=8, meta_batch_size=4, num_minibatches=2, num_eval_tasks=3),
    SNAILConfig(episodes_per_trial=2, filters=4, key_size=4, value_size=4, meta_batch_size=4, num_minibatches=2,
                num_eval_tasks=3),
])
def test_black_box_trains_on_host_with_no_code_of_its_own(config):
    factory = jaxmeta.rl2 if isinstance(config, RL2Config) else jaxmeta.snail
    jitted = factory(ENV, config=config)
    on_host = factory(ENV, config=config, collector=host())
    state = jitted.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    s1, m1 = jax.jit(jitted.train_step)(state, key)
    s2, m2 = on_host.update(state, on_host.sample(state, key))  # what the driver does with a host collector
    for k in m1:
        np.testing.assert_allclose(m2[k], m1[k], rtol=1e-3, atol=1e-5, err_msg=k)
    assert_trees_close(s2, s1, rtol=1e-3, atol=1e-4)
    assert on_host.evaluate(s2, jax.random.PRNGKey(2)).per_task.shape == (3, 2)


def test_host_collector_compiles_each_piece_once():
    config = MAMLConfig(hidden_sizes=(8,), meta_batch_size=2, num_episodes=2, num_eval_tasks=2)
    collector = host()
    algo = jaxmeta.maml(ENV, config=config, collector=collector)
    state = algo.init(jax.random.PRNGKey(0))
    algo.sample(state, jax.random.PRNGKey(1))
    n = len(collector._jitted)
    algo.sample(state, jax.random.PRNGKey(2))
    assert len(collector._jitted) == n  # the second batch reuses every compiled piece


def test_host_collector_refuses_vmapped_seeds():
    algo = jaxmeta.maml(ENV, config=MAMLConfig(hidden_sizes=(8,), meta_batch_size=2, num_episodes=2),
                        collector=host())
    with pytest.raises(ValueError, match="host simulator cannot be vmapped"):
        jaxmeta.algorithms.vmap_algorithm(algo)
