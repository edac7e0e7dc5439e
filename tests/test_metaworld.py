"""Meta-World ML1 / ML10 / ML45 on the `metaworld` host simulator: Meta-World's own
splits, the learners' batch types, reproducibility across seeds and worker counts, and
workers that die or get Ctrl-C."""
import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import metaworld
import numpy as np
import pytest
from metaworld import env_dict

import jaxmeta
from jaxmeta import driver, envs, host
from jaxmeta.algorithms.black_box import RL2Config
from jaxmeta.algorithms.maml import MAMLConfig
from jaxmeta.config import ConfigError
from jaxmeta.envs import metaworld as mw
from jaxmeta.envs.base import Box
from jaxmeta.types import TimeStep

from conftest import run_cli

H = 10  # short episodes: these tests check plumbing, not learning


def ml1(**kw):
    return envs.make("metaworld-ml1", horizon=H, **{"num_workers": 0, **kw})


def task_batch(split, env_index, goal_index):
    return mw.MetaWorldTask(*(jnp.asarray(x, jnp.int32) for x in (split, env_index, goal_index)))


def rand_vecs(tasks):
    return np.stack([pickle.loads(t.data)["rand_vec"] for t in tasks])


def env_rand_vecs(sim):
    return np.stack([e._last_rand_vec for e in sim.pool.local.envs])


MAML_CFG = MAMLConfig(hidden_sizes=(8,), meta_batch_size=2, num_episodes=2, num_eval_tasks=2)
RL2_CFG = RL2Config(episodes_per_trial=2, hidden_size=8, meta_batch_size=2, num_minibatches=1, num_eval_tasks=2)


@pytest.fixture(scope="module")
def ml1_maml():
    """MAML on ML1 through one collector (in-process simulator), shared so that its
    stages compile once for these tests; eval tasks as many as train tasks: same shapes."""
    env = ml1()
    collector = host.make_collector(env, "metaworld")
    yield env, collector, jaxmeta.maml(env, config=MAML_CFG, collector=collector)
    collector.close()


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- names and construction


def test_task_lists_are_meta_worlds():
    assert mw.ML10_TRAIN == tuple(env_dict.ML10_V3["train"]) and mw.ML10_TEST == tuple(env_dict.ML10_V3["test"])
    assert mw.ML45_TRAIN == tuple(env_dict.ML45_V3["train"]) and mw.ML45_TEST == tuple(env_dict.ML45_V3["test"])
    assert set(mw.ML1_NAMES) == set(env_dict.ALL_V3_ENVIRONMENTS) and len(mw.ML1_NAMES) == 50
    # spaces and horizon are known without building or stepping anything
    env = envs.make("metaworld-ml10")
    assert env.horizon == 500 and env.observation_space.shape == (39,) and env.action_space == Box(-1.0, 1.0, (4,))


def test_ml1_names_v2_maps_to_v3_and_unknown_names_raise():
    assert envs.make("metaworld-ml1", task_name="button-press-v2").task_name == "button-press-v3"
    with pytest.raises(ConfigError, match="button-press-v3") as e:
        envs.make("metaworld-ml1", task_name="buton-press-v3")
    assert e.value.field == "task_name"
    with pytest.raises(ConfigError) as e:
        envs.make("metaworld-ml1", horizon=501)
    assert e.value.field == "horizon"


def test_modules_import_and_tasks_sample_without_metaworld():
    code = (
        "import sys; sys.modules['metaworld'] = None\n"
        "import jax, jaxmeta, jaxmeta.cli\n"
        "from jaxmeta import envs, host\n"
        "env = envs.make('metaworld-ml45')\n"
        "t = env.task_distribution().held_out_batch(jax.random.PRNGKey(0), 4)\n"
        "assert env.task_names(t)[0] in env.env_names[1]\n"
        "try:\n"
        "    host.make_collector(env, 'metaworld').sim(2)\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr
    assert "pip install 'jaxmeta[metaworld]'" in out.stdout


# --------------------------------------------------------------------------- Meta-World's splits


def test_ml1_trains_on_the_train_goals_and_evaluates_on_the_test_goals():
    env = ml1()
    bench = metaworld.ML1("button-press-v3", seed=0)  # built independently of jaxmeta's cache
    train, test = rand_vecs(bench.train_tasks), rand_vecs(bench.test_tasks)
    assert not any((train == v).all(-1).any() for v in test)  # the splits are disjoint
    dist = env.task_distribution()
    t_train = dist.sample_batch(jax.random.PRNGKey(0), 64)
    t_test = dist.held_out_batch(jax.random.PRNGKey(0), 64)
    assert np.all(t_train.split == mw.TRAIN) and np.all(t_test.split == mw.TEST)
    assert len(np.unique(t_train.goal_index)) > 30  # goals are sampled over all 50
    # what the simulator sets is Meta-World's goal of that index and split
    sim = mw.MetaWorldSimulator(env, 6)
    goals = np.array([0, 7, 49, 0, 7, 49])
    sim.set_tasks(task_batch([0, 0, 0, 1, 1, 1], np.zeros(6), goals))
    sim.reset(0)
    got = env_rand_vecs(sim)
    np.testing.assert_array_equal(got[:3], train[goals[:3]])
    np.testing.assert_array_equal(got[3:], test[goals[3:]])



def test_maml_samples_train_goals_and_evaluates_on_test_goals(ml1_maml):
    env, collector, algo = ml1_maml
    bench = metaworld.ML1("button-press-v3", seed=0)
    train, test = rand_vecs(bench.train_tasks), rand_vecs(bench.test_tasks)
    state = algo.init(jax.random.PRNGKey(0))
    sim = collector.sim(MAML_CFG.envs_per_batch)
    algo.sample(state, jax.random.PRNGKey(1))
    assert all((train == v).all(-1).any() for v in env_rand_vecs(sim))
    curve = algo.evaluate(state, jax.random.PRNGKey(2))
    assert all((test == v).all(-1).any() for v in env_rand_vecs(sim))
    assert curve.success.shape == (2,) and curve.per_task_success.shape == (2, 2)
    assert bool(jnp.all((curve.per_task_success >= 0) & (curve.per_task_success <= 1)))


def test_ml10_trains_on_its_train_classes_and_goals():
    env = envs.make("metaworld-ml10", horizon=H, num_workers=0)
    train_names, test_names = env.env_names
    bench_tasks = mw.benchmark_tasks(env)  # metaworld.ML10(seed=0)'s own Task objects, per split and class
    split, env_index, goal = [0, 0, 0, 1, 1], [0, 9, 3, 0, 4], [5, 0, 49, 1, 2]
    sim = mw.MetaWorldSimulator(env, 5)
    sim.set_tasks(task_batch(split, env_index, goal))
    sim.reset(0)
    for e, s, c, g in zip(sim.pool.local.envs, split, env_index, goal):
        cls_name = (train_names, test_names)[s][c]
        assert cls_name in env_dict.ML10_V3[("train", "test")[s]]
        assert type(e) is env_dict.ALL_V3_ENVIRONMENTS[cls_name]
        task = bench_tasks[s][c][g]
        assert task.env_name == cls_name
        np.testing.assert_array_equal(e._last_rand_vec, pickle.loads(task.data)["rand_vec"])


@pytest.mark.parametrize("name,split_of", [("metaworld-ml10", env_dict.ML10_V3), ("metaworld-ml45", env_dict.ML45_V3)])
def test_ml10_ml45_distributions_reach_every_class_of_their_split(name, split_of):
    env = envs.make(name)
    train_names, test_names = env.env_names
    assert set(train_names) == set(split_of["train"]) and set(test_names) == set(split_of["test"])
    assert not set(train_names) & set(test_names)
    dist = env.task_distribution()
    train = dist.sample_batch(jax.random.PRNGKey(0), 900)
    test = dist.held_out_batch(jax.random.PRNGKey(0), 100)
    assert np.all(train.split == mw.TRAIN) and np.all(test.split == mw.TEST)
    assert set(env.task_names(train)) == set(train_names) and set(env.task_names(test)) == set(test_names)
    assert int(jnp.max(train.goal_index)) == mw.NUM_GOALS - 1 and int(jnp.min(train.goal_index)) == 0


# --------------------------------------------------------------------------- the learners' batches


@dataclass(frozen=True)
class JitTwin:
    """A jittable environment with Meta-World's spaces and horizon (for the jitted samplers' shapes)."""

    horizon: int = H
    observation_space = Box(-np.inf, np.inf, (39,))
    action_space = Box(-1.0, 1.0, (4,))

    def reset(self, key, task):
        return (), TimeStep(jnp.zeros(39), jnp.zeros(()), jnp.zeros((), bool), jnp.zeros((), bool))

    def step(self, key, state, action, task):
        return self.reset(key, task)

    def task_distribution(self):
        return ml1().task_distribution()


def without_success(batch):
    if hasattr(batch, "valid"):  # MAMLBatch
        return batch._replace(train=batch.train._replace(traj=batch.train.traj._replace(success=None)),
                              valid=batch.valid._replace(traj=batch.valid.traj._replace(success=None)))
    return batch._replace(traj=batch.traj._replace(success=None))


def assert_jitted_shapes(got, jitted, state):
    want = jax.eval_shape(jitted.sample, state, jax.random.PRNGKey(1))
    traj = got.valid.traj if hasattr(got, "valid") else got.traj
    assert traj.success.shape == traj.reward.shape and traj.success.dtype == traj.reward.dtype
    got = without_success(got)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert (g.shape, g.dtype) == (w.shape, w.dtype)


def test_same_seed_same_batch_with_the_jitted_samplers_shapes_and_dtypes(ml1_maml):
    env, collector, algo = ml1_maml
    state = algo.init(jax.random.PRNGKey(0))
    first, other, again = (algo.sample(state, jax.random.PRNGKey(k)) for k in (1, 2, 1))
    assert_trees_equal(again, first)  # same seed, same batch (after another batch on the same instances)
    assert not np.array_equal(first.valid.traj.obs, other.valid.traj.obs)
    assert float(jnp.std(first.valid.traj.reward)) > 0
    assert_jitted_shapes(first, jaxmeta.maml(JitTwin(), config=MAML_CFG), state)


def test_rl2_trials_have_the_jitted_samplers_shapes_and_dtypes():
    env = ml1()
    jitted = jaxmeta.rl2(JitTwin(), config=RL2_CFG)
    state = jitted.init(jax.random.PRNGKey(0))
    on_host = jaxmeta.rl2(env, config=RL2_CFG, collector=host.make_collector(env, "metaworld"))
    batch = on_host.sample(state, jax.random.PRNGKey(1))
    assert_jitted_shapes(batch, jitted, state)
    new, metrics = jax.jit(on_host.update)(state, batch)  # RL^2's usual update
    assert {"first_episode_success", "last_episode_success"} <= set(metrics)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert not np.array_equal(jax.tree.leaves(new.params)[0], jax.tree.leaves(state.params)[0])


def rollout(sim, tasks, seed, actions):
    sim.set_tasks(tasks)
    out = [sim.reset(seed)]
    for a in actions:
        out.extend(sim.step(a))
    return out


@pytest.fixture(scope="module")
def worker_sims():
    """ML10 simulators of 5 environments with 1 and 2 worker processes (started once)."""
    env = envs.make("metaworld-ml10", horizon=H)
    sims = {w: mw.MetaWorldSimulator(env, 5, num_workers=w) for w in (1, 2)}
    yield env, sims
    for sim in sims.values():
        sim.close()


def test_one_and_two_workers_step_the_same_episodes(worker_sims):
    env, sims = worker_sims
    actions = np.random.default_rng(0).uniform(-1.5, 1.5, (2, H, 5, 4))
    batches = [task_batch([0, 0, 1, 1, 0], [0, 1, 2, 2, 1], [3, 4, 5, 6, 7]),
               task_batch([1, 0, 0, 1, 0], [0, 1, 9, 3, 1], [1, 2, 3, 4, 5])]  # other classes: instances reused
    in_process = mw.MetaWorldSimulator(env, 5, num_workers=0)
    want = [rollout(in_process, t, 7, a) for t, a in zip(batches, actions)]
    assert float(np.std(want[0][2])) > 0  # rewards vary
    for workers, sim in sims.items():
        assert len(sim.worker_pids) == workers
        got = [rollout(sim, t, 7, a) for t, a in zip(batches, actions)]
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(g, w)


def test_pipelined_steps_answer_in_order_as_one_step_would(worker_sims):
    """step_send of two row groups (each split over the workers), then step_recv twice:
    the same observations, rewards and successes as stepping all rows at once."""
    env, sims = worker_sims
    tasks = task_batch([0, 0, 1, 1, 0], [0, 1, 2, 2, 1], [3, 4, 5, 6, 7])
    actions = np.random.default_rng(1).uniform(-1.5, 1.5, (H, 5, 4))
    in_process = mw.MetaWorldSimulator(env, 5, num_workers=0)
    assert not in_process.pipelined
    want = rollout(in_process, tasks, 3, actions)
    groups = [np.array([0, 2, 4]), np.array([1, 3])]
    for sim in sims.values():
        assert sim.pipelined
        sim.set_tasks(tasks)
        got = [sim.reset(3)]
        for a in actions:
            for g in groups:
                sim.step_send(g, a[g])
            step = [np.zeros((5,) + x.shape[1:], x.dtype) for x in want[1:5]]
            for g in groups:
                for full, part in zip(step, sim.step_recv()):
                    full[g] = part
            got.extend(step)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert all(b > 0 for b in sim.worker_busy_s())


def test_pipelined_collector_gives_the_episodes_of_the_plain_one():
    """MAML's batch through worker processes (the policy of the even tasks computed while
    the odd ones step, and back) equals the in-process collector's, for 1 and 2 workers."""
    cfg = dataclasses.replace(MAML_CFG, meta_batch_size=3)
    batches = []
    for workers in (0, 1, 2):
        env = ml1(num_workers=workers)
        collector = host.make_collector(env, "metaworld")
        algo = jaxmeta.maml(env, config=cfg, collector=collector)
        try:
            batches.append(algo.sample(algo.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)))
            if workers:
                assert collector.sim(cfg.meta_batch_size * cfg.num_episodes).pipelined
        finally:
            collector.close()
    assert float(jnp.std(batches[0].valid.traj.reward)) > 0
    for b in batches[1:]:
        assert_trees_equal(b, batches[0])


def test_a_failing_worker_raises_with_its_traceback(worker_sims):
    sim = worker_sims[1][1]
    sim.set_tasks(task_batch(np.zeros(5), np.zeros(5), np.arange(5)))
    sim.reset(0)
    with pytest.raises(mw.SimulatorError, match="(?s)worker 0 .* failed:.*Actions should be size 4"):
        sim.step(np.zeros((5, 3)))
    assert sim.worker_pids == []  # stopped


def test_worker_survives_ctrl_c_and_a_killed_worker_raises(worker_sims):
    sim = worker_sims[1][2]
    sim.set_tasks(task_batch(np.zeros(5), np.zeros(5), np.arange(5)))
    sim.reset(0)
    pids = sim.worker_pids
    # a terminal's Ctrl-C goes to its foreground process group: workers are in their own session
    assert all(os.getsid(p) != os.getsid(0) for p in pids)
    os.kill(pids[0], signal.SIGINT)  # and a SIGINT sent to one anyway leaves it stepping
    obs, reward, terminated, success = sim.step(np.zeros((5, 4)))
    assert obs.shape == (5, 39) and reward.shape == success.shape == terminated.shape == (5,)
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises(mw.SimulatorError, match=rf"worker 1 \(pid {pids[1]}\) died \(exit code -9\)"):
        sim.step(np.zeros((5, 4)))
    assert sim.worker_pids == []  # the others were stopped too


# --------------------------------------------------------------------------- learners, driver, CLI


def test_maml_trpo_and_promp_update_on_a_meta_world_batch(ml1_maml):
    env, collector, algo = ml1_maml
    state = algo.init(jax.random.PRNGKey(0))
    batch = algo.sample(state, jax.random.PRNGKey(1))
    promp = jaxmeta.maml(env, config=MAMLConfig(hidden_sizes=(8,), meta_batch_size=2, num_episodes=2, outer="promp",
                                                num_promp_steps=2), collector=collector)
    for learner in (algo, promp):  # the usual update, whatever collected the batch
        s0 = learner.init(jax.random.PRNGKey(0))
        new, metrics = jax.jit(learner.update)(s0, batch)
        assert {"pre_success", "post_success"} <= set(metrics)
        assert all(np.isfinite(float(v)) for v in metrics.values())
        assert not np.array_equal(jax.tree.leaves(new.meta)[0], jax.tree.leaves(s0.meta)[0])


def test_settings_default_to_the_metaworld_simulator_and_refuse_jax(capsys, tmp_path):
    s = driver.RunSettings("maml", "metaworld-ml1")
    assert s.simulator == "metaworld" and s.host
    assert driver.RunSettings("maml").simulator == "jax"
    with pytest.raises(ConfigError, match="no jittable implementation") as e:
        driver.RunSettings("rl2", "metaworld-ml10", simulator="jax")
    assert e.value.field == "simulator"
    code, _, err = run_cli(["train", "maml", "--env", "metaworld-ml1", "--simulator", "jax", "--out", str(tmp_path)],
                           capsys)
    assert code == 2 and "argument --simulator" in err and "'metaworld'" in err
    code, _, err = run_cli(["train", "maml", "--env", "metaworld-ml1", "--task-name", "nope-v3", "--out",
                            str(tmp_path)], capsys)
    assert code == 2 and "argument --task-name" in err


def test_driver_run_reports_success_per_test_task_and_the_mean(tmp_path):
    # as many eval tasks as train tasks: the same compiled stages and simulator
    config = MAMLConfig(hidden_sizes=(8,), meta_batch_size=4, num_episodes=1, num_eval_tasks=4)
    result = driver.run("maml", "metaworld-ml10", config, env_kwargs={"horizon": H, "num_workers": 0},
                        num_batches=1, run_dir=tmp_path / "run", progress=False, log=lambda s: None)
    run = tmp_path / "run"
    table = json.loads((run / "final_table.json").read_text())
    assert table["header"][:5] == ["policy", "test task", "tasks", "success after 0", "success after 1"]
    policies = {r[0] for r in table["rows"]}
    names = [r[1] for r in table["rows"] if r[0] == "trained"]
    assert policies == {"untrained", "trained"} and names[-1] == "mean"
    assert set(names[:-1]) <= set(mw.ML10_TEST) and sum(r[2] for r in table["rows"][:len(names) - 1]) == 4
    for r in table["rows"]:
        assert all(0.0 <= x <= 1.0 for x in r[3:5])
    assert set(result.curves) == {"untrained", "trained"} and result.curves["trained"].success.shape == (2,)
    assert (run / "adaptation.png").read_bytes()[:4] == b"\x89PNG"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"pre_success", "post_success"} <= set(metrics[0])
    assert json.loads((run / "config.json").read_text())["simulator"] == "metaworld"
    # `jaxmeta evaluate` makes the same table from the newest checkpoint
    again = driver.evaluate_run(run, log=lambda s: None)
    assert again.table == result.table
    saved = json.loads((run / "eval-1-4tasks-1steps-seed0" / "table.json").read_text())
    assert (saved["header"], saved["rows"]) == (table["header"], table["rows"])


def test_evaluate_refuses_a_folder_that_is_not_a_run(capsys, tmp_path):
    code, _, err = run_cli(["evaluate", str(tmp_path)], capsys)
    assert code == 2 and "cannot evaluate" in err and "config.json" in err
