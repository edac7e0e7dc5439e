"""MB-MPO and GrBAL: the seam (imagined experience through MAML's own update), the
adaptive model, configs, and the command line."""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_cli  # noqa: E402  (tests/ is on sys.path under pytest)
from jaxmeta import ConfigError
from jaxmeta.algorithms.grbal import GrBAL, GrBALConfig
from jaxmeta.algorithms.maml import MAML
from jaxmeta.algorithms.mbmpo import MBMPO, MBMPOConfig, without_meta_learning
from jaxmeta.envs import HalfCheetahVel, Navigation2D, Navigation2DDynamics
from jaxmeta.models import buffer_add, buffer_init, member, sample_indices, segment_mask, segments

TINY_MBMPO = dict(hidden_sizes=(8, 8), meta_batch_size=4, num_episodes=3, ensemble_size=2, model_hidden_sizes=(16,),
                  policy_steps=1, num_eval_tasks=4, buffer_episodes=16, model_max_epochs=3)


def test_mbmpo_inner_step_on_imagined_data_is_the_maml_update_on_real_data():
    env = Navigation2D(horizon=10)
    config = MBMPOConfig(task_form="distribution", **TINY_MBMPO)
    mb = MBMPO(env, env.task_distribution(), config)
    state = jax.jit(mb.init)(jax.random.PRNGKey(0))
    model_free = MAML(env, env.task_distribution(), config)  # MAML-TRPO on the real env, same config
    imagined = mb.policy_learner(state.model, state.buffer)  # MAML on the model env
    real_batch = jax.jit(model_free.sample)(state.policy, jax.random.PRNGKey(1))
    tasks = mb.imagined_tasks(mb.env_tasks(jax.random.PRNGKey(2), config.meta_batch_size))
    imag_batch = jax.jit(imagined.sample_tasks)(state.policy.meta, tasks, jax.random.PRNGKey(3))
    # one batch type, whoever collected it
    chex.assert_trees_all_equal_shapes_and_dtypes(real_batch, imag_batch)
    both = jax.jit(lambda policy, batch: (model_free.update(policy, batch), imagined.update(policy, batch)))
    for batch in (real_batch, imag_batch):
        (s_real, m_real), (s_imag, m_imag) = both(state.policy, batch)
        chex.assert_trees_all_equal((s_real, m_real), (s_imag, m_imag))  # bitwise: the same function
        assert bool(m_real["accepted"])
        moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), s_real.meta, state.policy.meta)
        assert max(jax.tree.leaves(moved)) > 0  # a real step was taken
    # the imagined episodes really are the model's: its member and the task's reward
    assert float(jnp.abs(imag_batch.valid.traj.obs[:, 1:] - imag_batch.valid.traj.obs[:, :1]).max()) > 0


@pytest.mark.slow
def test_grbal_adapted_model_predicts_a_perturbed_task_better():
    env = Navigation2DDynamics(horizon=40)
    config = GrBALConfig(model_hidden_sizes=(32, 32), past_steps=8, future_steps=8, meta_batch_size=40,
                         episodes_per_task=2, buffer_episodes=80, model_max_epochs=150,
                         num_candidates=8, plan_horizon=2)  # the first iteration acts at random: no planning
    g = GrBAL(env, env.task_distribution(), config)
    state = jax.jit(g.init)(jax.random.PRNGKey(0))

    @jax.jit
    def train_and_score(state, key):
        k_step, k_test = jax.random.split(key)
        state, metrics = g.algorithm().train_step(state, k_step)  # iteration 1: random actions, then meta-training
        held_out = env.task_distribution().sample_batch(jax.random.PRNGKey(99), 20)
        t = g.run_mpc(state.model, held_out, k_test, 2, adapt=False, explore=True)
        flat = lambda x: jnp.swapaxes(x, 1, 2).reshape((40,) + x.shape[1:2] + x.shape[3:])
        test = buffer_add(buffer_init(40, 40, 2, 2), flat(t.inputs[..., :2]), flat(t.action), flat(t.valid))
        idx = sample_indices(jax.random.PRNGKey(5), segment_mask(test, 16).reshape(-1), 512)
        obs, action, next_obs = segments(test, idx, 16)
        p = member(state.model.params, 0)
        losses = jax.vmap(lambda o, a, n: g.segment_losses(p, state.model.normalizer, o, a, n))(obs, action, next_obs)
        return metrics, jax.tree.map(jnp.mean, losses)

    metrics, (unadapted, adapted) = train_and_score(state, jax.random.PRNGKey(1))
    assert int(metrics["real_steps"]) == 40 * 2 * 40
    # on tasks never seen in training, one inner step on 8 transitions predicts the next 8 better
    assert float(adapted) < 0.75 * float(unadapted), (adapted, unadapted)
    assert float(metrics["future_loss_adapted"]) < float(metrics["future_loss_unadapted"])


@pytest.mark.parametrize("cls,kw,field", [
    (MBMPOConfig, dict(meta_batch_size=7, ensemble_size=5), "meta_batch_size"),
    (MBMPOConfig, dict(task_form="tasks"), "task_form"),
    (MBMPOConfig, dict(policy_steps=0), "policy_steps"),
    (MBMPOConfig, dict(monitor_episodes=-1), "monitor_episodes"),
    (MBMPOConfig, dict(model_lr=-1.0), "model_lr"),
    (MBMPOConfig, dict(inner_lr=-1.0), "inner_lr"),
    (GrBALConfig, dict(planner="mppi"), "planner"),
    (GrBALConfig, dict(past_steps=0), "past_steps"),
    (GrBALConfig, dict(planner="cem", num_candidates=10, cem_elites=20), "cem_elites"),
    (GrBALConfig, dict(cem_alpha=1.0), "cem_alpha"),
    (GrBALConfig, dict(model_valid_fraction=0.0), "model_valid_fraction"),
])
def test_configs_reject_bad_values_naming_the_field(cls, kw, field):
    with pytest.raises(ConfigError, match=field) as e:
        cls(**kw)
    assert e.value.field == field


def test_algorithms_refuse_environments_they_cannot_plan_in():
    nav = Navigation2D()
    with pytest.raises(ConfigError, match="depends on the task") as e:  # GrBAL's tasks must change the dynamics only
        GrBAL(nav, nav.task_distribution(), GrBALConfig())
    assert e.value.field == "env"
    loco = HalfCheetahVel()  # its reward needs the torso's x position, which the observation omits
    with pytest.raises(ConfigError, match="transition_reward"):
        MBMPO(loco, loco.task_distribution(), MBMPOConfig())
    with pytest.raises(ConfigError, match="past_steps"):
        GrBAL(Navigation2DDynamics(horizon=20), None, GrBALConfig())


def test_without_meta_learning_is_a_setting():
    c = without_meta_learning(MBMPOConfig())
    assert c.inner_lr == 0.0 and c.model_mean and c.policy_steps == MBMPOConfig().policy_steps


@pytest.mark.slow
def test_mbmpo_learns_to_adapt_on_navigation_from_a_few_hundred_real_steps(tmp_path):
    from jaxmeta.driver import checkpoint as ckpt
    from jaxmeta.driver import run

    config = MBMPOConfig(task_form="distribution", hidden_sizes=(32, 32), meta_batch_size=10, num_episodes=10,
                         ensemble_size=2, model_hidden_sizes=(32, 32), policy_steps=10, num_eval_tasks=10,
                         buffer_episodes=100, model_max_epochs=20)
    result = run("mbmpo", "navigation2d", config, env_kwargs={"horizon": 20}, num_batches=3, run_dir=tmp_path / "mb",
                 progress=False, log=lambda msg: None)
    rows = result.metrics
    # at most 10 tasks x 1 episode x 20 steps of adapted policies per iteration (fewer when a goal is reached)
    added = np.diff([0] + [r["real_steps"] for r in rows])
    assert rows[0]["real_steps"] == 200 and all(100 <= d <= 200 for d in added), added
    assert all(100 <= d <= 200 for d in np.diff([0] + [r["monitor_steps"] for r in rows]))
    for key in ("model_val_loss_0", "model_val_loss_1", "imagined_pre_return", "imagined_post_return",
                "real_pre_return", "real_post_return", "policy_kl"):
        assert all(np.isfinite(r[key]) for r in rows), key
    untrained, trained = result.curves["untrained"].returns, result.curves["trained"].returns  # real [pre, post]
    assert float(trained[1]) > float(untrained[1]) + 4.0, (untrained, trained)
    assert float(trained[1]) > float(trained[0]) + 1.5, trained  # one inner step on imagined data helps
    # the checkpoint holds the whole state (replay buffer and counters included): resume continues it
    target = {"state": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), result.state),
              "k_train": jax.random.PRNGKey(0)}
    restored = ckpt.restore(tmp_path / "mb", target, {"algorithm": "mbmpo"})
    chex.assert_trees_all_equal(restored.tree["state"], result.state)
    assert restored.iteration == 3 and restored.meta["iteration"] == 3 and not restored.skipped
    assert int(restored.tree["state"].buffer.size) == 30


@pytest.mark.parametrize("args,flag", [
    (["--ensemble-size", "3"], "--meta-batch-size"),  # 20 tasks do not cycle over 3 members
    (["--task-form", "tasks"], "--task-form"),
    (["--model-hidden-sizes", "64,x"], "--model-hidden-sizes"),
    (["--env", "halfcheetah_vel"], "--env"),
])
def test_cli_mbmpo_flags_are_validated_naming_the_flag(args, flag, tmp_path, capsys):
    code, out, err = run_cli(["train", "mbmpo", "--out", str(tmp_path), *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and flag in lines[0], err
    assert not any(tmp_path.iterdir())


def test_cli_trains_grbal(tmp_path, capsys):
    code, out, err = run_cli(
        ["train", "grbal", "--env", "navigation2d_dynamics", "--horizon", "12", "--num-batches", "2",
         "--model-hidden-sizes", "16", "--past-steps", "3", "--future-steps", "3", "--meta-batch-size", "3",
         "--num-candidates", "16", "--plan-horizon", "3", "--num-eval-tasks", "2", "--buffer-episodes", "8",
         "--model-max-epochs", "2", "--out", str(tmp_path), "--name", "g", "--no-progress"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert [r["real_steps"] for r in rows] == [36, 72]
    assert all(np.isfinite(r[k]) for r in rows for k in ("model_val_loss", "future_loss_adapted", "real_return"))
    table = json.loads((tmp_path / "g" / "final_table.json").read_text())
    assert [r[0] for r in table["rows"]] == [0, 1]  # MPC without and with the online inner step
