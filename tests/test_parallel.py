"""Sharding over the "tasks" mesh, multi-process runs and vmapped sweeps."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import envs, parallel
from jaxmeta.algorithms import MAMLConfig, maml
from jaxmeta.driver import seeds

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--env", "navigation2d", "--meta-batch-size", "4", "--num-episodes", "2", "--hidden-sizes", "16",
        "--horizon", "10", "--num-eval-tasks", "4", "--no-progress", "--checkpoint-every", "0"]


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # not the CLI's CPU layout: one device each
    env.update(extra)
    return env


def test_shard_tasks_is_identity_without_mesh():
    x = {"a": jnp.arange(8.0), "b": jnp.zeros((4, 3))}
    assert parallel.shard_tasks(x) is x
    with parallel.use_mesh(parallel.task_mesh(jax.devices()[:1])):  # one device: still the identity
        assert parallel.shard_tasks(x) is x


SHARDED = r"""
import json, sys, jax, jax.numpy as jnp, numpy as np
from jaxmeta import envs, parallel
from jaxmeta.algorithms import MAMLConfig, maml
from jaxmeta.driver import seeds
assert jax.device_count() == 4, jax.devices()
env = envs.make("navigation2d", horizon=10)
diff = lambda a, b: max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
results = {}
for outer in ("adam", "trpo", "trpo64"):
  with jax.enable_x64(outer == "trpo64"):
    config = MAMLConfig(meta_batch_size=8, num_episodes=2, hidden_sizes=(16,), num_eval_tasks=4, outer=outer[:4])
    algo = maml(env, config=config)
    state = algo.init(jax.random.PRNGKey(0))
    if outer == "trpo64":  # float64: no rounding for conjugate gradient to amplify
        state = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    key = jax.random.PRNGKey(1)
    single_state, single_m = jax.jit(algo.train_step)(state, key)      # no mesh: one device
    mesh = parallel.task_mesh()
    with parallel.use_mesh(mesh):
        step = jax.jit(algo.train_step, out_shardings=parallel.replicated(mesh))
        sharded_state, sharded_m = step(state, key)
        hlo = step.lower(state, key).compile().as_text()
        valid = jax.jit(algo.sample)(state, key).valid
    results[outer] = {
        "single_devices": len(single_m["post_return"].devices()),
        "metric_diff": {k: abs(float(single_m[k]) - float(sharded_m[k])) for k in single_m},
        "metrics": {k: float(sharded_m[k]) for k in sharded_m},
        "state_diff": diff(single_state, sharded_state),
        "state_change": diff(single_state, state),
        "valid_spec": str(valid.traj.reward.sharding.spec),
        "valid_devices": len(valid.traj.reward.sharding.device_set),
        "all_reduce": "all-reduce" in hlo,
    }
print(json.dumps(results))
"""


def test_sharded_meta_iteration_equals_single_device():
    out = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, timeout=400,
                         env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for outer, r in results.items():
        assert r["single_devices"] == 1
        assert r["valid_devices"] == 4 and "tasks" in r["valid_spec"], r  # the task batch is split over 4 devices
        assert r["all_reduce"]  # the means over tasks (losses, gradients) are reduced across the mesh
        assert r["state_change"] > 1e-4  # the step did update the parameters
    # Adam outer loop: the whole meta-iteration, new parameters included, agrees
    r = results["adam"]
    assert r["state_diff"] < 1e-6, r
    for k, d in r["metric_diff"].items():
        assert d <= 1e-5 * max(1.0, abs(r["metrics"][k])), (k, r)
    # TRPO: sampling, losses and the meta-gradient agree; the conjugate-gradient step itself
    # amplifies float32 rounding (a 1e-7 relative change of the parameters moves it too),
    # so the new parameters are only compared loosely
    r = results["trpo"]
    for k in ("pre_return", "post_return", "loss_before", "grad_norm"):
        assert r["metric_diff"][k] <= 1e-5 * max(1.0, abs(r["metrics"][k])), (k, r)
    assert r["state_diff"] < 0.25 * r["state_change"], r
    # ...and in float64 the whole TRPO meta-iteration, new parameters included, agrees
    r = results["trpo64"]
    assert r["state_diff"] < 1e-7, r
    for k, d in r["metric_diff"].items():
        assert d <= 1e-8 * max(1.0, abs(r["metrics"][k])), (k, r)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_agrees_with_one_process(tmp_path):
    """jax.distributed on localhost (gloo CPU collectives): 2 processes x 1 device."""
    port = _free_port()
    # Adam outer loop: TRPO's conjugate gradient amplifies float32 rounding (see above)
    base = [sys.executable, "-m", "jaxmeta.cli", "train", "maml", *TINY, "--outer", "adam", "--num-batches", "2",
            "--out", str(tmp_path)]
    procs = [
        subprocess.Popen(base + ["--name", "dist", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                 "--process-id", str(i)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for i in range(2)
    ]
    single = subprocess.run(base + ["--name", "single"], env=_env(), capture_output=True, text=True, timeout=400)
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert single.returncode == 0, single.stderr[-3000:]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    cfg = json.loads((tmp_path / "dist" / "config.json").read_text())
    assert cfg["process_count"] == 2 and cfg["device_count"] == 2
    rows = lambda name: [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    dist, one = rows("dist"), rows("single")
    assert [r["iteration"] for r in dist] == [1, 2]
    for a, b in zip(dist, one):
        for k in b:
            if k != "wall_s":
                np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-5, err_msg=k)
    assert (tmp_path / "dist" / "final_table.json").exists()
    assert (tmp_path / "dist" / "checkpoints" / "2").is_dir()  # orbax saved from both processes


def test_sweep_over_inner_lr_matches_separate_configs():
    env = envs.make("navigation2d", horizon=10)
    tasks = env.task_distribution()
    config = MAMLConfig(meta_batch_size=4, num_episodes=2, hidden_sizes=(16,), num_eval_tasks=4, outer="adam")
    values = jnp.array([0.05, 0.5])
    algo = seeds.sweep(lambda lr: maml(env, tasks, seeds.replace_unchecked(config, inner_lr=lr)), values)
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)  # same seed: only the inner lr differs
    state = jax.jit(algo.init)(keys)
    np.testing.assert_array_equal(state.value, values)
    state, metrics = jax.jit(algo.train_step)(state, keys)
    assert metrics["post_return"].shape == (2,)
    assert abs(float(metrics["post_return"][0] - metrics["post_return"][1])) > 1e-3  # the value matters
    # member 1 equals a plain run with inner_lr=0.5 in the (validated) config
    import dataclasses

    plain = maml(env, tasks, dataclasses.replace(config, inner_lr=0.5))
    s1, m1 = jax.jit(plain.train_step)(plain.init(keys[1]), keys[1])
    for k in m1:
        np.testing.assert_allclose(metrics[k][1], m1[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree.leaves(state.state), jax.tree.leaves(s1)):
        np.testing.assert_allclose(a[1], b, rtol=1e-4, atol=1e-6)


def test_replace_unchecked_rejects_unknown_field():
    with pytest.raises(TypeError, match="no field"):
        seeds.replace_unchecked(MAMLConfig(), not_a_field=1)
