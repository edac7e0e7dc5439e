"""MAML-Q: meta-gradients through Q-learning steps, Q-learning itself, the seam, baselines."""
import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from conftest import central_differences, relative_errors, run_cli
from jaxmeta import ConfigError
from jaxmeta.algorithms import REGISTRY
from jaxmeta.algorithms.maml import MetaParams
from jaxmeta.algorithms.maml_q import MAMLQ, MAMLQConfig, episode_stats
from jaxmeta.envs import GeneratedMaze, make
from jaxmeta.envs.mazes import bfs_distances
from jaxmeta.rl import n_step_returns
from jaxmeta.rollout import JaxCollector

TINY = dict(meta_batch_size=2, num_episodes=4, num_inner_steps=2, num_minibatches=2, num_eval_tasks=3,
            multitask_iterations=2, n_step=2, meta_sgd=False)


def build(env=None, **kw):
    env = GeneratedMaze(rows=3, cols=3, horizon=10) if env is None else env
    return MAMLQ(env, env.task_distribution(), MAMLQConfig(**{**TINY, **kw}))


def to64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def test_n_step_returns_match_the_definition():
    rng = np.random.default_rng(0)
    T = 7
    r, v = rng.normal(size=T), rng.normal(size=T)
    d = 0.9 * (rng.uniform(size=T) > 0.2)
    for n in (1, 2, 3, 10):
        ref = []
        for t in range(T):
            g, disc = 0.0, 1.0
            for i in range(n):
                if t + i >= T:
                    break
                g += disc * r[t + i]
                disc *= d[t + i]
                last = t + i
            ref.append(g + disc * v[last])
        np.testing.assert_allclose(n_step_returns(jnp.asarray(r), jnp.asarray(d), jnp.asarray(v), n), ref, rtol=1e-5)


def test_episode_stats():
    reward = jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # [T=4, E=2]
    valid = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])  # episode 0 reaches the goal in 3 moves
    ret, success, steps = episode_stats(reward, valid)
    np.testing.assert_array_equal(success, [1.0, 0.0])
    np.testing.assert_array_equal(steps, [3.0, 4.0])
    np.testing.assert_array_equal(ret, [1.0, 0.0])


@pytest.mark.parametrize("q_network,meta_sgd,objective", [("tabular", True, "return"), ("mlp", False, "td")])
def test_meta_gradient_through_q_learning_matches_central_finite_differences(q_network, meta_sgd, objective):
    """K = 2 Q-learning updates of 2 minibatch steps each, 2-step targets, in float64."""
    with jax.enable_x64(True):
        kw = dict(q_network=q_network, meta_sgd=meta_sgd, objective=objective, n_step=2, temperature=1.0,
                  init_scale=0.5, hidden_sizes=(8,), activation="tanh", meta_batch_size=3)
        kw["inner_lr"] = 0.5 if q_network == "tabular" else 0.05
        m = build(GeneratedMaze(rows=3, cols=3, horizon=10, placement="random"), **kw)
        state = to64(m.init(jax.random.PRNGKey(0)))
        batch = jax.jit(m.sample)(state, jax.random.PRNGKey(1))
        assert batch.train.obs.shape == (3, 2, 10, 4, 9) and batch.train.obs.dtype == jnp.float64
        assert 0 < float(jnp.sum(batch.valid.reward)) < 12  # some episodes reach the goal, some do not
        flat, unravel = ravel_pytree(state.meta)
        value, grad = jax.jit(jax.value_and_grad(lambda f: m.outer_loss(unravel(f), batch)))(flat)
        if objective == "return":
            loss = jax.jit(lambda f: m.outer_loss(unravel(f), batch))
        else:  # the TD objective's target is held fixed (a semi-gradient): differentiate with it frozen
            targets = jax.jit(jax.vmap(lambda tr: m.adapt(state.meta, tr)))(batch.train)
            loss = jax.jit(lambda f: jnp.mean(jax.vmap(lambda tr, va, tp: m.td_loss(m.adapt(unravel(f), tr), va, tp))(
                batch.train, batch.valid, targets)))
            np.testing.assert_allclose(loss(flat), value, rtol=1e-12)
        ds, fds = central_differences(loss, flat, 3, seed=10)
        assert min(abs(fd) for fd in fds) > 1e-6
        rel = lambda g: max(relative_errors(g, ds, fds))
        assert rel(grad) < 1e-5, rel(grad)
        if objective == "return":  # the check discriminates: the first-order gradient is measurably off
            fo = dataclasses.replace(m, config=dataclasses.replace(m.config, first_order=True))
            assert rel(jax.jit(jax.grad(lambda f: fo.outer_loss(unravel(f), batch)))(flat)) > 1e-3


@pytest.mark.parametrize("q_network,observation", [("mlp", "local"), ("tabular", "cell")])
def test_one_pass_td_gradient_is_the_td_loss_gradient_and_so_is_its_derivative(q_network, observation):
    """`td_grad` (one network pass) is grad_q td_loss(q, traj, target = p) at q = p, and the
    same function of p: its directional derivative (what the meta-gradient uses) agrees too.
    In float64, which the local (receptive-field) observation must also run in."""
    with jax.enable_x64(True):
        env = GeneratedMaze(rows=3, cols=3, horizon=30, placement="random", observation=observation)
        m = build(env, q_network=q_network, hidden_sizes=(8,), activation="tanh", init_scale=0.5, n_step=3,
                  exploration="boltzmann", temperature=1.0)
        params = to64(m.qnet.init(jax.random.PRNGKey(0)))
        traj = JaxCollector(env).episodes(m.act, params, m.tasks.sample_batch(jax.random.PRNGKey(0), 1),
                                          jax.random.split(jax.random.PRNGKey(2), 1), 4)
        traj = jax.tree.map(lambda x: x[0], traj)  # [T, E, ...]
        assert traj.obs.dtype == jnp.float64 and 0 < float(jnp.sum(traj.reward)) < 4, "some episodes reach the goal"
        two_pass = lambda p: jax.grad(m.td_loss)(p, traj, p)
        direction = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(3), x.shape, x.dtype), params)
        (g1, d1), (g2, d2) = (jax.jvp(f, (params,), (direction,)) for f in (two_pass, lambda p: m.td_grad(p, traj)))
        for a, b in ((g1, g2), (d1, d2)):
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                assert float(jnp.max(jnp.abs(x))) > 1e-6
                np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-13)


def test_inner_update_is_q_learning_on_a_table():
    """Over one-hot cells a gradient step is the tabular Q-learning update of the visited entries."""
    m = build(num_minibatches=1, n_step=1, gamma=0.9, inner_lr=0.5)
    params = m.qnet.init(jax.random.PRNGKey(0))
    traj = JaxCollector(m.env).episodes(m.act, params, m.tasks.sample_batch(jax.random.PRNGKey(1), 1),
                                        jax.random.split(jax.random.PRNGKey(2), 1), 4)
    traj = jax.tree.map(lambda x: x[0], traj)  # [T, E, ...]
    lr = m.step_sizes(MetaParams(params, None))
    new = m.q_update(params, lr, traj, first_order=True)["table"]  # no jit
    jitted = jax.jit(m.q_update, static_argnums=3)(params, lr, traj, True)["table"]
    np.testing.assert_allclose(jitted, new, rtol=1e-6, atol=1e-8)
    table = np.asarray(params["table"])
    s = np.asarray(jnp.argmax(traj.obs, -1))  # [T, E] cells
    a, r, valid = np.asarray(traj.action), np.asarray(traj.reward), np.asarray(traj.valid)
    delta = np.zeros_like(table)
    n = 4  # episodes: the TD loss sums over time and averages over episodes
    for t in range(traj.reward.shape[0] - 1):
        for e in range(4):
            if valid[t, e]:
                y = r[t, e] + 0.9 * valid[t + 1, e] * table[s[t + 1, e]].max()
                delta[s[t, e], a[t, e]] += (y - table[s[t, e], a[t, e]]) / n
    np.testing.assert_allclose(new, table + 0.5 * delta, rtol=1e-5, atol=1e-7)


def test_tabular_q_learning_converges_to_the_bfs_shortest_path():
    env = GeneratedMaze(rows=4, cols=4, horizon=40)
    m = MAMLQ(env, env.task_distribution(), MAMLQConfig(exploration="epsilon", epsilon=0.3, gamma=0.9,
                                                        num_episodes=8, inner_lr=0.5, n_step=1, meta_sgd=False))
    task = env.task_distribution().sample_batch(jax.random.PRNGKey(5), 1)
    d_opt = int(bfs_distances(task.walls[0], task.start[0])[3, 3])
    lr = m.step_sizes(MetaParams(m.zero_init(jax.random.PRNGKey(0)), None))
    collector = JaxCollector(env)

    @jax.jit
    def learn(params, key):
        def body(p, k):
            traj = collector.episodes(m.act, p, task, k[None], 8)
            return m.q_update(p, lr, jax.tree.map(lambda x: x[0], traj), first_order=True), None

        return jax.lax.scan(body, params, jax.random.split(key, 400))[0]

    params = learn(m.zero_init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    greedy = lambda p, obs, key: (jnp.argmax(m.qnet.apply(p, obs), -1), jnp.zeros(obs.shape[0]))
    traj = collector.episodes(greedy, params, task, jax.random.PRNGKey(2)[None], 1)
    _, success, steps = episode_stats(traj.reward[0], traj.valid[0])
    assert float(success[0]) == 1.0 and int(steps[0]) == d_opt, (int(steps[0]), d_opt)
    # and the greedy value of the start is the discounted goal reward gamma^(d - 1)
    q_start = float(jnp.max(m.qnet.apply(params, traj.obs[0, 0, 0])))
    assert q_start == pytest.approx(0.9 ** (d_opt - 1), rel=0.05)


def test_adaptation_vmap_equals_loop():
    m = build()
    state = m.init(jax.random.PRNGKey(0))
    batch = jax.jit(m.sample)(state, jax.random.PRNGKey(1))
    adapt = jax.jit(m.adapt)
    adapted = jax.jit(jax.vmap(m.adapt, in_axes=(None, 0)))(state.meta, batch.train)
    for i in range(2):
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], adapted),
                                    adapt(state.meta, jax.tree.map(lambda x: x[i], batch.train)), rtol=1e-5, atol=1e-7)
    # the adaptation redone in `update` is the one whose Q-networks collected the batches
    @jax.jit
    def resampled(meta, train):
        p, lr = meta.policy, m.step_sizes(meta)
        for k in range(2):
            p = m.adapt_tasks(p, lr, jax.tree.map(lambda x: x[:, k], train), None if k == 0 else 0)
        return p

    chex.assert_trees_all_close(resampled(state.meta, batch.train), adapted, rtol=1e-5, atol=1e-7)


def test_train_step_is_one_program_on_gymnax_metamaze():
    """The same learner on the other task distribution (MetaMaze's receptive field, an MLP)."""
    m = build(make("maze", horizon=10), q_network="mlp", hidden_sizes=(16,), meta_sgd=True, num_inner_steps=1,
              objective="td")
    algo = m.algorithm()
    state = algo.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algo.train_step)(state, jax.random.PRNGKey(1))
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert int(new.step) == 1 and metrics["env_steps"] == 2 * 2 * 4 * 10
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new.meta, state.meta)
    assert max(jax.tree.leaves(moved)) > 0.0


def test_config_errors_name_the_field():
    for kw, field in (({"num_minibatches": 3}, "num_minibatches"), ({"objective": "q"}, "objective"),
                      ({"epsilon": 0.2}, "epsilon"), ({"q_network": "cnn"}, "q_network"),
                      ({"n_step": 0}, "n_step"), ({"num_eval_steps": 0}, "num_eval_steps")):
        with pytest.raises(ConfigError, match=field) as e:
            MAMLQConfig(**kw)
        assert e.value.field == field
    with pytest.raises(ConfigError, match="Discrete"):
        MAMLQ(make("navigation2d"), make("navigation2d").task_distribution(), MAMLQConfig())


def test_cli_trains_maml_q_with_the_baseline_table(tmp_path, capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0 and "maml_q" in out and "maze_gen" in out
    args = ["train", "maml_q", "--rows", "3", "--cols", "3", "--horizon", "8", "--meta-batch-size", "2",
            "--num-episodes", "2", "--num-inner-steps", "1", "--num-eval-tasks", "4", "--multitask-iterations", "2",
            "--num-batches", "2", "--out", str(tmp_path), "--name", "mq", "--no-progress"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    table = json.loads((tmp_path / "mq" / "final_table.json").read_text())
    assert [r[0] for r in table["rows"]] == ["meta-learned (maml_q)", "Q-learning, zero init",
                                             "Q-learning, random init", "multi-task Q, pretrained"]
    assert table["header"] == ["method", "success @0", "success @1", "steps @0", "steps @1"]
    assert all(0.0 <= r[1] <= 1.0 and 0.0 < r[3] <= 8.0 for r in table["rows"])
    assert "maze_gen" in REGISTRY["rl2"].envs


def test_plot_maze_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from jaxmeta.driver.report import plot_maze

    task = GeneratedMaze(rows=4, cols=5).sample_task(jax.random.PRNGKey(0))
    path = tmp_path / "maze.png"
    plot_maze(task.walls, task.start, task.goal, trajectory=np.array([[0, 0], [0, 1], [1, 1]]), path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zero_init_starts_every_q_value_at_zero():
    zero = build().zero_init(jax.random.PRNGKey(0))
    assert float(jnp.max(jnp.abs(zero["table"]))) == 0.0
    mlp = build(q_network="mlp", hidden_sizes=(4,))
    params = mlp.zero_init(jax.random.PRNGKey(0))
    assert float(jnp.max(jnp.abs(mlp.qnet.apply(params, jnp.ones((3, 9)))))) == 0.0
    assert float(jnp.max(jnp.abs(params["Dense_0"]["kernel"]))) > 0.0  # hidden layers stay random


@pytest.mark.slow
def test_meta_learned_init_beats_q_learning_from_scratch_and_multitask_q():
    """Held-out 4 x 4 mazes, 3 Q-learning updates of 4 episodes: the meta-learned initialisation
    reaches the goal in well under the steps of Q-learning from zero and of a multi-task Q
    pretrained for as many iterations."""
    env = GeneratedMaze(rows=4, cols=4, horizon=40)
    config = MAMLQConfig(meta_batch_size=16, num_episodes=4, num_inner_steps=3, n_step=20, outer_lr=0.01,
                         outer_lr_decay_steps=60, num_eval_tasks=100, multitask_iterations=60)
    m = MAMLQ(env, env.task_distribution(), config)
    algo = m.algorithm()
    state = algo.init(jax.random.PRNGKey(0))
    step = jax.jit(algo.train_step)
    for i in range(60):  # held-out steps @3 (seed 0): meta 14.7, zero init 27.9, multi-task 18.2
        state, _ = step(state, jax.random.PRNGKey(i))
    stats = {k: s.mean() for k, s in jax.jit(m.baseline_stats)(state, jax.random.PRNGKey(1)).items()}
    meta, zero = stats["meta-learned (maml_q)"], stats["Q-learning, zero init"]
    multitask = stats["multi-task Q, pretrained"]
    assert float(meta.steps[-1]) < 0.65 * float(zero.steps[-1]), (meta.steps, zero.steps)
    assert float(meta.steps[-1]) < float(multitask.steps[-1]) - 1.0, (meta.steps, multitask.steps)
    assert float(meta.success[-1]) > float(zero.success[-1]) + 0.2
    assert float(meta.steps[-1]) < float(meta.steps[0]) - 10.0  # it adapts: not only a good prior
