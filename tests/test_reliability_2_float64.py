"""Class 2: float64. Every learner, sampler and environment follows the dtype of its
parameters; with x64 enabled, parameters are float64 and everything runs in float64.
A resume that fails after restoring leaves the run folder as it was."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmeta
from jaxmeta import driver, envs
from jaxmeta.algorithms import MAMLConfig, RL2Config, SNAILConfig
from conftest import TINY, one_line_error, run_jaxmeta, snapshot, subprocess_env

MAML_SMALL = dict(hidden_sizes=(8,), meta_batch_size=2, num_episodes=2, num_eval_tasks=2)
BB_SMALL = dict(episodes_per_trial=2, meta_batch_size=2, num_minibatches=1, num_eval_tasks=2)

LEARNERS = [
    ("maml-trpo-metasgd", "navigation2d", {"horizon": 6},
     lambda: MAMLConfig(**MAML_SMALL, meta_sgd=True, num_inner_steps=2)),
    ("maml-adam-dice", "navigation2d", {"horizon": 6}, lambda: MAMLConfig(**MAML_SMALL, outer="adam",
                                                                          inner_estimator="dice")),
    ("maml-promp", "navigation2d", {"horizon": 6}, lambda: MAMLConfig(**MAML_SMALL, outer="promp")),
    ("rl2-mdp", "tabular_mdp", {"num_states": 3, "num_actions": 2, "horizon": 3},
     lambda: RL2Config(**BB_SMALL, hidden_size=8)),
    ("rl2-navigation", "navigation2d", {"horizon": 5}, lambda: RL2Config(**BB_SMALL, hidden_size=8)),
    ("rl2-maze", "maze", {"horizon": 5}, lambda: RL2Config(**BB_SMALL, hidden_size=8)),
    ("snail-bandit", "bandit", {"num_arms": 3}, lambda: SNAILConfig(**BB_SMALL, filters=4, key_size=4, value_size=4)),
]


def _float_dtypes(tree) -> set:
    return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.parametrize("name,env_name,env_kw,make_config", LEARNERS, ids=[c[0] for c in LEARNERS])
def test_every_learner_runs_in_float64(name, env_name, env_kw, make_config):
    with jax.enable_x64(True):
        algo = jaxmeta.algorithms.get(name.split("-")[0]).build(envs.make(env_name, **env_kw), make_config())
        state = algo.init(jax.random.PRNGKey(0))
        assert _float_dtypes(state) == {"float64"}, _float_dtypes(state)
        batch = jax.eval_shape(algo.sample, state, jax.random.PRNGKey(1))
        assert _float_dtypes(batch) == {"float64"}, _float_dtypes(batch)
        new, metrics = jax.jit(algo.train_step)(state, jax.random.PRNGKey(1))
        assert _float_dtypes(new) == {"float64"}
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
        curve = jax.eval_shape(algo.evaluate, new, jax.random.PRNGKey(2))  # its sampling ran in train_step
        assert curve.returns.dtype == jnp.float64
    # and without x64 the same learner is float32 throughout
    algo32 = jaxmeta.algorithms.get(name.split("-")[0]).build(envs.make(env_name, **env_kw), make_config())
    assert _float_dtypes(algo32.init(jax.random.PRNGKey(0))) == {"float32"}


def test_line_search_follows_the_parameters_dtype():
    from jaxmeta.rl import backtracking_line_search

    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            x0 = jnp.ones(3, dtype)
            x, loss, *_ = jax.jit(lambda x0: backtracking_line_search(
                lambda x: (jnp.sum(x**2), jnp.zeros((), dtype)), x0, x0, jnp.sum(x0**2), 1.0, 5, 0.5))(x0)
            assert x.dtype == dtype and loss.dtype == dtype


def test_cli_with_x64_enabled_trains_maml_trpo_in_float64(tmp_path, jax_cache):
    """`JAX_ENABLE_X64=1 jaxmeta train maml` (TRPO: conjugate gradient and line search)."""
    env = subprocess_env(jax_cache, JAX_ENABLE_X64="1")
    out = run_jaxmeta(["train", "maml", *TINY, "--num-batches", "2", "--out", str(tmp_path), "--name", "r"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    settings = driver.read_settings(driver.RunFolder(tmp_path / "r"))
    with jax.enable_x64(True):
        algo, _ = driver.loop.build_algorithm(settings, settings.make_env())
        keys = driver.seeds.run_keys(settings.seed)
        target = {"state": jax.eval_shape(algo.init, keys.init), "k_train": keys.train}
        saved = driver.checkpoint.restore(tmp_path / "r", target, settings.identity())
    assert _float_dtypes(saved.tree["state"]) == {"float64"} and saved.iteration == 2


def test_a_resume_that_fails_after_restoring_changes_nothing(tmp_path, toy):
    run = tmp_path / "run"
    driver.train(toy(num_batches=3), run, progress=False, log=lambda s: None)
    before = snapshot(run)
    # the run restores, then its first new meta-iteration fails (a NaN at iteration 4)
    with pytest.raises(driver.NonFiniteError, match="meta-iteration 4"):
        driver.train(toy(nan_at=4, num_batches=5), run, resume=True, progress=False, log=lambda s: None)
    assert snapshot(run) == before  # config.json still says num_batches 3; metrics and checkpoints as they were


def test_x64_checkpoint_resumed_without_x64_is_a_clear_error(tmp_path, capsys, jax_cache):
    from conftest import run_cli

    env = subprocess_env(jax_cache, JAX_ENABLE_X64="1")
    out = run_jaxmeta(["train", "maml", *TINY, "--num-batches", "1", "--out", str(tmp_path), "--name", "r"], env)
    assert out.returncode == 0, out.stderr[-2000:]
    before = snapshot(tmp_path / "r")
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "r"), "--num-batches", "2", "--no-progress"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "different training state" in line and "float64 in the checkpoint" in line and "float32 expected" in line
    assert snapshot(tmp_path / "r") == before


def test_brax_locomotion_samples_in_float64():
    pytest.importorskip("brax")
    from jaxmeta.envs import HalfCheetahVel

    with jax.enable_x64(True):
        env = HalfCheetahVel(horizon=3, backend="spring")
        algo = jaxmeta.maml(env, config=MAMLConfig(**MAML_SMALL))
        state = algo.init(jax.random.PRNGKey(0))
        assert _float_dtypes(state) == {"float64"}
        batch = jax.eval_shape(algo.sample, state, jax.random.PRNGKey(1))  # shapes only: Brax compiles slowly
        assert _float_dtypes(batch) == {"float64"}
