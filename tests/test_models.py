"""Learned dynamics, replay, planners and the dynamics-task environments (jaxmeta.models)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import ConfigError
from jaxmeta.envs import Navigation2D, Navigation2DDynamics
from jaxmeta.envs.navigation import NavDynamicsTask, NavState
from jaxmeta.models import (
    DynamicsConfig, DynamicsModel, ModelEnv, ModelState, ModelTask, buffer_add, buffer_init, cem, fit, fit_normalizer, member,
    random_shooting, segment_mask, segments, sequence_returns, transition_loss, transitions,
)
from jaxmeta.rollout import rollout_episodes


def _linear_data(key, n, D=3, A=2):
    k = jax.random.split(key, 3)
    Am = jnp.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.95]])
    Bm = jnp.array([[0.5, -0.2], [0.1, 0.4], [-0.3, 0.2]])
    obs = jax.random.normal(k[0], (n, D))
    act = jax.random.uniform(k[1], (n, A), minval=-1, maxval=1)
    return obs, act, obs @ Am.T + act @ Bm.T


def test_fit_drives_validation_loss_below_threshold_on_a_linear_system():
    obs, act, nxt = _linear_data(jax.random.PRNGKey(0), 2000)
    model = DynamicsModel(3, 2, num_members=3, hidden_sizes=(32, 32))
    state = jax.jit(model.init_state)(jax.random.PRNGKey(1))
    norm = fit_normalizer(obs, act, nxt, jnp.ones(2000))
    run = jax.jit(lambda p, k: fit(k, p, transition_loss(model, norm, obs, act, nxt), jnp.ones(2000),
                                   batch_size=128, max_epochs=100, patience=5))
    params, info = run(state.params, jax.random.PRNGKey(2))
    chex.assert_shape(info.val_loss, (3,))
    assert float(info.val_loss_before.min()) > 0.5  # the check can fail: untrained members are far off
    assert float(info.val_loss.max()) < 0.01, info
    # fresh data from the same system: every member predicts the next state
    o2, a2, n2 = _linear_data(jax.random.PRNGKey(3), 200)
    pred = model.predict_all(state._replace(params=params, normalizer=norm), o2, a2)  # [K, 200, 3]
    assert float(jnp.sqrt(jnp.mean((pred - n2) ** 2))) < 0.05
    # members are independent fits (their own splits, minibatches and initialisations)
    assert float(jnp.abs(pred[0] - pred[1]).max()) > 1e-4


def test_fit_stops_early_and_keeps_the_best_parameters():
    obs, act, _ = _linear_data(jax.random.PRNGKey(0), 500)
    noise = jax.random.normal(jax.random.PRNGKey(4), obs.shape)  # nothing to learn
    model = DynamicsModel(3, 2, num_members=2, hidden_sizes=(16,))
    params = jax.jit(model.init)(jax.random.PRNGKey(1))
    norm = fit_normalizer(obs, act, noise, jnp.ones(500))
    loss = transition_loss(model, norm, obs, act, noise)
    best, info = jax.jit(lambda p: fit(jax.random.PRNGKey(2), p, loss, jnp.ones(500), batch_size=50, max_epochs=500,
                                       patience=3))(params)
    assert int(info.epochs.max()) < 100, info.epochs
    assert bool(jnp.all(info.val_loss <= info.val_loss_before))


def test_model_and_fit_follow_float64_params():
    with jax.enable_x64(True):
        obs, act, nxt = jax.tree.map(lambda x: x.astype(jnp.float64), _linear_data(jax.random.PRNGKey(0), 64))
        model = DynamicsModel(3, 2, num_members=2, hidden_sizes=(8,))
        params = jax.tree.map(lambda x: x.astype(jnp.float64), jax.jit(model.init)(jax.random.PRNGKey(1)))
        norm = fit_normalizer(obs, act, nxt, jnp.ones(64))
        params, info = jax.jit(lambda p: fit(jax.random.PRNGKey(2), p, transition_loss(model, norm, obs, act, nxt),
                                             jnp.ones(64), batch_size=16, max_epochs=2))(params)
        assert {x.dtype for x in jax.tree.leaves((params, norm, info.val_loss))} == {jnp.dtype(jnp.float64)}
        pred = model.predict(member(params, 0), norm, obs[:2], act[:2])
        assert pred.dtype == jnp.float64


def _point_dynamics(env, task):
    return lambda o, a: env.next_position(o, a, task)


def _reward(env):
    return lambda o, a, o2: env.transition_reward(o, a, o2)


@pytest.mark.parametrize("planner", ["random_shooting", "cem"])
def test_planners_jit_equals_no_jit_and_follow_the_dtype(planner):
    env = Navigation2DDynamics()
    task = NavDynamicsTask(jnp.asarray(0.7), jnp.asarray(1.2), jnp.asarray([0.01, -0.02]))
    fn = random_shooting if planner == "random_shooting" else cem
    kw = dict(num_candidates=64, horizon=4, low=-0.1, high=0.1, action_dim=2)
    if planner == "cem":
        kw.update(num_iterations=3, num_elites=8)
    plan = lambda key, obs: fn(key, obs, _point_dynamics(env, task), _reward(env), **kw)
    obs = jnp.asarray([0.1, -0.2])
    eager, jitted = plan(jax.random.PRNGKey(0), obs), jax.jit(plan)(jax.random.PRNGKey(0), obs)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)
    chex.assert_shape(eager.actions, (4, 2))
    assert float(jnp.abs(eager.action).max()) <= 0.1 + 1e-7
    with jax.enable_x64(True):
        task64 = jax.tree.map(lambda x: x.astype(jnp.float64), task)
        p64 = fn(jax.random.PRNGKey(0), obs.astype(jnp.float64), _point_dynamics(env, task64), _reward(env), **kw)
        assert p64.action.dtype == jnp.float64 and p64.value.dtype == jnp.float64


def test_sequence_returns_stop_counting_at_the_known_termination():
    dynamics = lambda o, a: o + a
    reward = lambda o, a, o2: -jnp.abs(o2).sum()
    done = lambda o, a, o2: o2[0] > 0.25  # ends once the first coordinate passes 0.25
    actions = jnp.full((1, 4, 1), 0.1)  # positions 0.1, 0.2, 0.3, 0.4
    full = sequence_returns(jnp.zeros(1), actions, dynamics, reward)
    cut = sequence_returns(jnp.zeros(1), actions, dynamics, reward, done)
    np.testing.assert_allclose(full, [-1.0], rtol=1e-6)
    np.testing.assert_allclose(cut, [-0.6], rtol=1e-6)  # 0.1 + 0.2 + 0.3: the terminal step counts


@pytest.mark.parametrize("planner", ["random_shooting", "cem"])
def test_mpc_with_the_true_dynamics_reaches_the_navigation_goal(planner):
    env = Navigation2DDynamics(goal_x=0.5, goal_y=-0.3)
    task = NavDynamicsTask(jnp.asarray(2.0), jnp.asarray(0.7), jnp.asarray([0.01, 0.01]))  # turned by 115 deg
    fn = random_shooting if planner == "random_shooting" else cem
    kw = dict(num_candidates=200, horizon=5, low=-0.1, high=0.1, action_dim=2)

    @jax.jit
    def episode(key):
        def body(state, k):
            action = fn(k, state.pos, _point_dynamics(env, task), _reward(env), **kw).action
            state, ts = env.step(k, state, action, task)
            return state, ts.reward

        state, _ = env.reset(key, task)
        return jax.lax.scan(body, state, jax.random.split(key, 30))

    state, rewards = episode(jax.random.PRNGKey(0))
    goal = jnp.asarray([0.5, -0.3])
    assert float(jnp.linalg.norm(state.pos - goal)) < 0.03, state.pos
    # the task matters: executing the planned actions as if unrotated would miss the goal
    assert float(rewards[-1]) > -0.03


def test_buffer_wraps_and_reads_transitions_and_segments():
    buf = buffer_init(4, 5, 1, 1)
    ep = lambda start: (jnp.arange(start, start + 15, dtype=jnp.float32).reshape(3, 5, 1),
                        jnp.ones((3, 5, 1)), jnp.ones((3, 5)))
    buf = buffer_add(buf, *ep(0))
    assert int(buf.size) == 3 and int(buf.index) == 3
    obs, action, valid = ep(100)
    valid = valid.at[0, 3:].set(0.0)  # the first new episode ended after 3 steps
    buf = buffer_add(buf, obs, action, valid)  # 3 more into 4 rows: rows 3, 0, 1
    assert int(buf.size) == 4 and int(buf.index) == 2
    np.testing.assert_array_equal(buf.obs[:, 0, 0], [105, 110, 10, 100])
    o, a, n, mask = transitions(buf)
    chex.assert_shape((o, n, mask), ((16, 1), (16, 1), (16,)))
    np.testing.assert_array_equal(n[mask > 0] - o[mask > 0], 1.0)  # consecutive steps only
    assert int(mask.sum()) == 3 * 4 + 2  # the short episode has 2 transitions
    seg = segment_mask(buf, 3)  # [4, 2]: starts 0 and 1
    np.testing.assert_array_equal(seg, [[1, 1], [1, 1], [1, 1], [0, 0]])
    so, sa, sn = segments(buf, jnp.asarray([1, 4]), 3)  # row 0 start 1, row 2 start 0
    np.testing.assert_array_equal(so[:, :, 0], [[106, 107, 108], [10, 11, 12]])
    np.testing.assert_array_equal(sn[:, :, 0], [[107, 108, 109], [11, 12, 13]])


def test_model_env_imagines_like_the_real_env_once_the_model_fits():
    env = Navigation2D(horizon=20)
    act = lambda p, obs, key: (jnp.clip(0.3 * (jnp.asarray([0.4, -0.2]) - obs), -0.1, 0.1)
                               + 0.02 * jax.random.normal(key, obs.shape), jnp.zeros(obs.shape[0]))
    goal = env.task_distribution().sample_batch(jax.random.PRNGKey(0), 8)
    real = jax.vmap(lambda t, k: rollout_episodes(env, act, None, t, k, 4))(goal, jax.random.split(jax.random.PRNGKey(1), 8))
    buf = buffer_init(32, 20, 2, 2)
    flat = lambda x: jnp.swapaxes(x, 1, 2).reshape((32, 20) + x.shape[3:])
    buf = buffer_add(buf, flat(real.obs), jnp.clip(flat(real.action), -0.1, 0.1), flat(real.valid))
    model = DynamicsModel(2, 2, num_members=2, hidden_sizes=(32, 32))
    obs, action, nxt, mask = transitions(buf)
    norm = fit_normalizer(obs, action, nxt, mask)
    params, info = jax.jit(lambda p: fit(jax.random.PRNGKey(2), p, transition_loss(model, norm, obs, action, nxt),
                                         mask, max_epochs=100))(jax.jit(model.init)(jax.random.PRNGKey(3)))
    menv = ModelEnv(env, model, ModelState(params, norm), buf.obs[:, 0], buf.size)
    tasks = ModelTask(jnp.arange(8) % 2, goal)
    imagined = jax.jit(jax.vmap(lambda t, k: rollout_episodes(menv, act, None, t, k, 4)))(
        tasks, jax.random.split(jax.random.PRNGKey(1), 8))
    r_real = jnp.sum(real.reward, axis=1).mean(axis=1)  # [8]
    r_imag = jnp.sum(imagined.reward, axis=1).mean(axis=1)
    np.testing.assert_allclose(r_imag, r_real, rtol=0.1)
    assert float(jnp.std(r_real)) > 0.5  # the tasks' returns differ: the reward is the task's


def test_navigation_dynamics_env():
    env = Navigation2DDynamics(max_rotation=1.0, scale_low=0.5, scale_high=2.0, max_drift=0.03)
    tasks = env.task_distribution().sample_batch(jax.random.PRNGKey(0), 500)
    assert float(jnp.abs(tasks.rotation).max()) <= 1.0 and float(tasks.rotation.std()) > 0.4
    assert 0.5 <= float(tasks.scale.min()) and float(tasks.scale.max()) <= 2.0
    task = NavDynamicsTask(jnp.asarray(jnp.pi / 2), jnp.asarray(2.0), jnp.asarray([0.01, 0.0]))
    state, ts = env.reset(jax.random.PRNGKey(0), task)
    state, ts = env.step(jax.random.PRNGKey(0), state, jnp.asarray([0.5, 0.0]), task)  # clipped to 0.1, turned
    np.testing.assert_allclose(ts.obs, [0.01, 0.2], atol=1e-6)
    np.testing.assert_allclose(ts.reward, env.transition_reward(jnp.zeros(2), None, ts.obs), rtol=1e-6)
    np.testing.assert_allclose(ts.reward, -np.hypot(0.5 - 0.01, 0.5 - 0.2), rtol=1e-5)
    # the nominal task is plain point navigation to the fixed goal
    nav = Navigation2D()
    s_nav = NavState(jnp.asarray([0.2, 0.1]), jnp.zeros((), jnp.int32))
    goal = nav.task_distribution().sample(jax.random.PRNGKey(0))._replace(goal=jnp.asarray([0.5, 0.5]))
    a = jnp.asarray([0.05, -0.08])
    _, t1 = nav.step(None, s_nav, a, goal)
    _, t2 = env.step(None, s_nav, a, env.nominal_task())
    chex.assert_trees_all_close((t1.obs, t1.reward), (t2.obs, t2.reward), rtol=1e-6)


@pytest.mark.parametrize("field,value", [
    ("max_rotation", 4.0), ("scale_low", 0.0), ("scale_high", 0.1), ("max_drift", -1.0), ("horizon", 0),
])
def test_navigation_dynamics_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field) as e:
        Navigation2DDynamics(**{field: value})
    assert e.value.field == field


@pytest.mark.parametrize("field,value", [
    ("model_hidden_sizes", ()), ("model_activation", "gelu"), ("model_lr", 0.0), ("model_batch_size", 0),
    ("model_patience", 0), ("model_valid_fraction", 1.0), ("buffer_episodes", 0),
])
def test_dynamics_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field) as e:
        DynamicsConfig(**{field: value})
    assert e.value.field == field


def test_brax_dynamics_tasks_perturb_the_system():
    pytest.importorskip("brax")
    from jaxmeta.envs import AntDynamics, HalfCheetahDynamics

    env = HalfCheetahDynamics(horizon=5, backend="spring")
    A = env.action_space.shape[0]
    # task sampling traces (learners draw tasks inside jit): one crippled joint per cheetah, one leg per ant
    cheetahs = jax.jit(lambda k: env.task_distribution().sample_batch(k, 64))(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(jnp.sum(cheetahs.actuator_scale == 0, axis=1), 1)
    assert len(np.unique(np.argmin(np.asarray(cheetahs.actuator_scale), axis=1))) == A
    ants = jax.jit(lambda k: AntDynamics(backend="spring").task_distribution().sample_batch(k, 16))(jax.random.PRNGKey(3))
    legs = np.asarray(ants.actuator_scale).reshape(16, 4, 2)
    assert np.all(legs[..., 0] == legs[..., 1]) and np.all(np.sum(legs[..., 0] == 0, axis=1) == 1)
    nominal = env.nominal_task()
    crippled = env.task_distribution().sample(jax.random.PRNGKey(0))
    j = int(jnp.argmin(crippled.actuator_scale))
    assert float(crippled.actuator_scale[j]) == 0.0 and float(jnp.sum(crippled.actuator_scale)) == A - 1
    heavy = nominal._replace(mass_scale=nominal.mass_scale * 2.0)
    a = jax.random.uniform(jax.random.PRNGKey(1), (A,), minval=-1, maxval=1)
    tasks = jax.tree.map(lambda *x: jnp.stack(x), crippled, nominal, nominal, heavy)
    actions = jnp.stack([a, a.at[j].set(0.0), a, a])

    @jax.jit
    @jax.vmap  # a batch of tasks is a vmap over systems
    def run(task, action):
        s, ts0 = env.reset(jax.random.PRNGKey(2), task)
        s, ts1 = env.step(None, s, action, task)
        s, ts2 = env.step(None, s, action, task)
        return ts0.obs, ts1.obs, ts1.reward, ts2.obs

    obs0, obs1, r1, obs2 = run(tasks, actions)
    # a crippled joint is that actuator's command zeroed
    np.testing.assert_allclose(obs2[0], obs2[1], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(obs2[0] - obs2[2]).max()) > 1e-2
    assert float(jnp.abs(obs2[3] - obs2[2]).max()) > 1e-2  # heavier bodies move otherwise
    expect = jax.vmap(env.transition_reward)(obs0, actions, obs1)
    np.testing.assert_allclose(r1[1:], expect[1:], rtol=1e-5, atol=1e-6)
    # the reward charges the commanded action (the crippled joint's command too)
    np.testing.assert_allclose(r1[0], env.transition_reward(obs0[0], a, obs1[0]), rtol=1e-5)
