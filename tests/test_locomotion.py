"""Brax locomotion tasks, the MuJoCo host adapter, and MAML on both.

Brax tests use the "spring" backend: the rewards do not depend on the backend and it
compiles fastest on a CPU. Each needs `brax` (and the host tests `gymnasium[mujoco]`).
"""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import ConfigError
from jaxmeta.envs import REGISTRY, make
from jaxmeta.envs.locomotion import AntDir, AntGoal, HalfCheetahDir, HalfCheetahVel

DT = 0.05


def test_modules_import_without_brax_or_mujoco():
    code = (
        "import sys, jaxmeta, jaxmeta.envs.locomotion, jaxmeta.envs.mujoco, jaxmeta.host, jaxmeta.driver, "
        "jaxmeta.cli\n"
        "from jaxmeta.envs import make\n"
        "env = make('halfcheetah_vel', horizon=100)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('brax', 'mujoco', 'gymnasium')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_registry_names():
    for name, cls in [("halfcheetah_vel", HalfCheetahVel), ("halfcheetah_dir", HalfCheetahDir),
                      ("ant_dir", AntDir), ("ant_goal", AntGoal)]:
        assert REGISTRY[name] is cls
        assert make(name, horizon=100, backend="positional").horizon == 100


@pytest.mark.parametrize("cls,field,value", [
    (HalfCheetahVel, "horizon", 0), (HalfCheetahVel, "backend", "bullet"), (HalfCheetahVel, "high", -1.0),
    (HalfCheetahVel, "ctrl_cost_weight", -0.1), (HalfCheetahDir, "horizon", 2.5),
    (AntDir, "directions", "diagonal"), (AntDir, "healthy_z_max", -1.0), (AntDir, "survive_reward", float("nan")),
    (AntGoal, "radius", 0.0), (AntGoal, "backend", None),
])
def test_bad_env_config_raises(cls, field, value):
    with pytest.raises(ConfigError, match=field) as e:
        cls(**{field: value})
    assert e.value.field == field


def test_task_distributions():
    key = jax.random.PRNGKey(0)
    v = HalfCheetahVel().task_distribution().sample_batch(key, 500).velocity
    assert 0.0 <= float(v.min()) and float(v.max()) <= 2.0 and float(v.std()) > 0.4
    d = HalfCheetahDir().task_distribution().sample_batch(key, 200).direction
    assert set(np.unique(np.asarray(d)).tolist()) == {-1.0, 1.0}
    u = AntDir().task_distribution().sample_batch(key, 200).direction
    np.testing.assert_allclose(jnp.linalg.norm(u, axis=-1), 1.0, rtol=1e-5)
    assert float(jnp.abs(jnp.mean(u, axis=0)).max()) < 0.2  # spread around the circle
    fb = AntDir(directions="forward_backward").task_distribution().sample_batch(key, 100).direction
    assert set(np.unique(np.asarray(fb[:, 0])).tolist()) == {-1.0, 1.0} and float(jnp.abs(fb[:, 1]).max()) == 0.0
    g = AntGoal().task_distribution().sample_batch(key, 2000).goal
    r = jnp.linalg.norm(g, axis=-1)
    assert float(r.max()) <= 3.0 + 1e-5
    assert abs(float(jnp.mean(r <= 1.5)) - 0.25) < 0.05  # uniform in the disc: P(r < R/2) = 1/4


def _random_transitions(env_a, env_b, n, seed, act_scale=1.5):
    """n random states (Brax's reset noise), then one random step under both envs."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    ta = env_a.task_distribution().sample_batch(k[0], n)
    tb = env_b.task_distribution().sample_batch(k[1], n)
    adim = env_a.action_space.shape[0]
    a1 = jax.random.uniform(k[3], (n, adim), minval=-act_scale, maxval=act_scale)  # beyond [-1, 1]: clipped

    @jax.jit
    def run(keys, a1, ta, tb):
        def one(key, a1, ta, tb):
            s1, _ = env_a.reset(key, ta)
            sa, tsa = env_a.step(key, s1, a1, ta)
            sb, tsb = env_b.step(key, s1, a1, tb)
            return s1.pipeline.x.pos[0], sa.pipeline.x.pos[0], sa.pipeline.q, sa.pipeline.qd, tsa, tsb, sb.pipeline.x.pos[0]

        return jax.vmap(one)(keys, a1, ta, tb)

    pos0, pos, q, qd, tsa, tsb, pos_b = run(jax.random.split(k[4], n), a1, ta, tb)
    np.testing.assert_allclose(pos_b, pos, rtol=1e-6)  # same physics, the task only changes the reward
    return ta, tb, np.clip(np.asarray(a1), -1, 1), np.asarray(pos0), np.asarray(pos), q, qd, tsa, tsb


def test_halfcheetah_rewards_match_hand_computation():
    pytest.importorskip("brax")
    vel, dirn = HalfCheetahVel(horizon=5, backend="spring"), HalfCheetahDir(horizon=5, backend="spring")
    assert abs(vel.dt - DT) < 1e-6 and vel.observation_space.shape == (17,) and vel.action_space.shape == (6,)
    tv, td, a, pos0, pos, q, qd, tsv, tsd = _random_transitions(vel, dirn, 8, seed=0)
    v_x = (pos[:, 0] - pos0[:, 0]) / DT  # torso forward velocity
    ctrl = 0.05 * np.sum(a**2, axis=-1)
    np.testing.assert_allclose(tsv.reward, -np.abs(v_x - np.asarray(tv.velocity)) - ctrl, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tsd.reward, np.asarray(td.direction) * v_x - ctrl, rtol=1e-4, atol=1e-4)
    assert np.abs(v_x).max() > 0.05 and not np.any(tsv.terminated)  # the states really move
    np.testing.assert_allclose(tsv.obs, np.concatenate([q[:, 1:], qd], axis=-1), rtol=1e-6)


def test_ant_rewards_match_hand_computation():
    pytest.importorskip("brax")
    adir, agoal = AntDir(horizon=5, backend="spring"), AntGoal(horizon=5, backend="spring")
    assert adir.observation_space.shape == (27,) and adir.action_space.shape == (8,)
    tdir, tgoal, a, pos0, pos, q, qd, tsd, tsg = _random_transitions(adir, agoal, 6, seed=1)
    v_xy = (pos[:, :2] - pos0[:, :2]) / DT
    expected_dir = np.sum(np.asarray(tdir.direction) * v_xy, -1) - 0.5 * np.sum(a**2, -1) + 1.0
    np.testing.assert_allclose(tsd.reward, expected_dir, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(tsd.terminated, (pos[:, 2] < 0.0) | (pos[:, 2] > 1.0))
    expected_goal = -np.sum(np.abs(pos[:, :2] - np.asarray(tgoal.goal)), -1) - 0.1 * np.sum(a**2, -1)
    np.testing.assert_allclose(tsg.reward, expected_goal, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tsd.obs, np.concatenate([q[:, 2:], qd], axis=-1), rtol=1e-6)


def test_mujoco_host_rewards_match_hand_computation():
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    from jaxmeta.envs.mujoco import MujocoLocomotion

    env = HalfCheetahVel(horizon=5)
    sim = MujocoLocomotion(env, 4)
    tasks = env.task_distribution().sample_batch(jax.random.PRNGKey(0), 4)
    sim.set_tasks(tasks)
    obs = sim.reset(seed=3)
    assert obs.shape == (4, 17) and abs(sim.dt - DT) < 1e-9
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = rng.uniform(-1.5, 1.5, (4, 6))
        x0 = np.array([e.data.qpos[0] for e in sim.pool.local.envs])
        obs, r, term = sim.step(a)
        x1 = np.array([e.data.qpos[0] for e in sim.pool.local.envs])
        expected = -np.abs((x1 - x0) / DT - np.asarray(tasks.velocity)) - 0.05 * np.sum(np.clip(a, -1, 1) ** 2, -1)
        np.testing.assert_allclose(r, expected, rtol=1e-4, atol=1e-4)
        assert not term.any()
        qpos = np.stack([e.data.qpos for e in sim.pool.local.envs])
        qvel = np.stack([e.data.qvel for e in sim.pool.local.envs])
        np.testing.assert_allclose(obs, np.concatenate([qpos[:, 1:], qvel], -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [HalfCheetahVel, HalfCheetahDir, AntDir, AntGoal])
def test_every_locomotion_task_runs_on_native_mujoco(cls):
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    from jaxmeta.envs import obs_dim
    from jaxmeta.envs.mujoco import MujocoLocomotion

    env = cls(horizon=5)
    sim = MujocoLocomotion(env, 2)
    sim.set_tasks(env.task_distribution().sample_batch(jax.random.PRNGKey(0), 2))
    obs = sim.reset(seed=1)
    assert obs.shape == (2, obs_dim(env))  # the Brax twin's observation
    qpos = np.stack([e.data.qpos for e in sim.pool.local.envs])
    qvel = np.stack([e.data.qvel for e in sim.pool.local.envs])
    skip = 1 if cls in (HalfCheetahVel, HalfCheetahDir) else 2  # x (and y) left out
    np.testing.assert_allclose(obs, np.concatenate([qpos[:, skip:], qvel], -1), rtol=1e-5, atol=1e-6)
    for _ in range(3):
        obs, r, term = sim.step(np.random.default_rng(0).uniform(-1, 1, (2,) + sim.action_space.shape))
        assert np.isfinite(obs).all() and np.isfinite(r).all() and not term.any()


def test_same_learners_on_brax_and_on_native_mujoco():
    pytest.importorskip("brax")
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    import jaxmeta
    from jaxmeta.algorithms import RL2Config
    from jaxmeta.algorithms.maml import MAMLConfig
    from jaxmeta.host import make_collector

    env = HalfCheetahVel(horizon=5, backend="spring")
    config = MAMLConfig(hidden_sizes=(8,), meta_batch_size=2, num_episodes=3, num_eval_tasks=2)
    brax = jaxmeta.maml(env, config=config)
    mujoco = jaxmeta.maml(env, config=config, collector=make_collector(env, "mujoco", config.envs_per_batch))
    state = brax.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)

    # Brax: everything in one XLA program
    brax_state, brax_met = jax.jit(brax.train_step)(state, key)
    # MuJoCo: env in Python, policy and processing jitted -- the same MAML, other collector
    batch = mujoco.sample(state, key)
    ref = jax.eval_shape(brax.sample, state, key)
    for got, want in zip(jax.tree.leaves(batch), jax.tree.leaves(ref)):
        assert got.shape == want.shape and got.dtype == want.dtype
    # the recorded log-probs are the acting policy's
    t0 = jax.tree.map(lambda x: x[0, 0], batch.train.traj)
    np.testing.assert_allclose(t0.log_prob, brax.sample.__self__.policy.log_prob(state.meta.policy, t0.obs, t0.action),
                               rtol=1e-4, atol=1e-4)
    assert float(jnp.min(batch.valid.traj.valid)) == 1.0
    host_state, host_met = jax.jit(mujoco.update)(state, batch)
    assert set(host_met) == set(brax_met)
    for met in (brax_met, host_met):
        assert bool(met["accepted"]) and 0 < float(met["kl"]) <= config.max_kl
        assert all(np.isfinite(float(v)) for v in met.values())
    for new in (brax_state, host_state):
        moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.meta, state.meta))
        assert max(moved) > 0

    # RL^2 on the same simulator, through the same collector protocol
    rl2_config = RL2Config(episodes_per_trial=2, hidden_size=8, meta_batch_size=2, num_minibatches=1,
                           num_eval_tasks=2)
    rl2 = jaxmeta.rl2(env, config=rl2_config, collector=make_collector(env, "mujoco", rl2_config.envs_per_batch))
    s0 = rl2.init(jax.random.PRNGKey(0))
    trials = rl2.sample(s0, key)
    assert trials.traj.inputs.shape == (10, 2, 17 + 6 + 2)
    s1, m1 = jax.jit(rl2.update)(s0, trials)
    assert np.isfinite(float(m1["trial_reward"])) and int(s1.step) == 1


def test_mujoco_workers_give_the_in_process_episodes_and_a_killed_one_raises():
    """MAML's batch with the physics in 1 or 2 worker processes (pipelined: the policy of
    the even tasks runs while the odd ones step) is the in-process batch."""
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    import os
    import signal

    import jaxmeta
    from jaxmeta.algorithms.maml import MAMLConfig
    from jaxmeta.envs.worker_pool import SimulatorError
    from jaxmeta.host import make_collector

    config = MAMLConfig(hidden_sizes=(8,), meta_batch_size=3, num_episodes=2, num_eval_tasks=2)
    batches = []
    for workers in (0, 1, 2):
        env = HalfCheetahVel(horizon=6, num_workers=workers)
        collector = make_collector(env, "mujoco", config.envs_per_batch)
        algo = jaxmeta.maml(env, config=config, collector=collector)
        batches.append(algo.sample(algo.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)))
        sim = collector.sim(config.envs_per_batch)
        assert sim.pipelined == (workers > 0) and len(sim.worker_pids) == workers
        if workers == 2:
            os.kill(sim.worker_pids[1], signal.SIGKILL)
            with pytest.raises(SimulatorError, match=r"MuJoCo worker 1 \(pid \d+\) died \(exit code -9\)"):
                sim.step(np.zeros((config.envs_per_batch, 6)))
            assert sim.worker_pids == []
        collector.close()
    assert float(jnp.std(batches[0].valid.traj.reward)) > 0
    for b in batches[1:]:
        for x, y in zip(jax.tree.leaves(b), jax.tree.leaves(batches[0])):
            np.testing.assert_array_equal(x, y)


def test_num_workers_is_checked():
    with pytest.raises(ConfigError, match="num_workers"):
        HalfCheetahVel(num_workers=-1)
