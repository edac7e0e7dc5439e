"""The CPU layout: seeds in turn ("map") or vmapped, and the command line's choice of
host devices on a CPU-only machine (docs/benchmarks.md, "CPU layout")."""
import json

import numpy as np
import pytest
from conftest import TINY, run_jaxmeta, subprocess_env

from jaxmeta import driver
from jaxmeta.algorithms import MAMLConfig
from jaxmeta.config import ConfigError
from jaxmeta.driver import RunSettings


def _rows(result):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in result.metrics]


def test_seeds_in_turn_equal_vmapped_seeds_and_single_runs():
    config = MAMLConfig(meta_batch_size=4, num_episodes=2, hidden_sizes=(16,), num_eval_tasks=4, outer="adam")
    run = lambda **kw: driver.train(RunSettings("maml", "navigation2d", {"horizon": 10}, config, num_batches=2,
                                                checkpoint_every=0, **kw), progress=False, log=lambda s: None)
    mapped, vmapped = run(num_seeds=2, seed_layout="map"), run(num_seeds=2, seed_layout="vmap")
    singles = [run(seed=s) for s in (0, 1)]
    assert [(r["iteration"], r["seed"]) for r in _rows(mapped)] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for a, b in zip(_rows(mapped), _rows(vmapped)):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
    by_seed = {(r["iteration"], r["seed"]): r for r in _rows(mapped)}
    for s, single in enumerate(singles):
        for r in _rows(single):
            for k in r:
                if k != "seed":
                    np.testing.assert_allclose(by_seed[(r["iteration"], s)][k], r[k], rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(np.asarray(mapped.curves["trained"].returns[1]),
                               np.asarray(singles[1].curves["trained"].returns), rtol=1e-4, atol=1e-6)


def test_seed_layout_is_validated_and_auto_is_the_algorithms_own_on_a_cpu():
    with pytest.raises(ConfigError, match="seed_layout"):
        RunSettings("maml", seed_layout="pmap")
    assert RunSettings("maml").resolved_seed_layout() == "map"  # this suite runs on the CPU
    assert RunSettings("rl2").resolved_seed_layout() == "vmap"
    assert RunSettings("snail").resolved_seed_layout() == "map"
    assert RunSettings("maml", seed_layout="vmap").resolved_seed_layout() == "vmap"


@pytest.mark.parametrize("algo,flags,xla_flags,devices", [
    ("maml", TINY, None, 4),  # one host device per task of the meta-batch
    ("maml", TINY, "--xla_force_host_platform_device_count=2", 2),  # the user's own choice wins
    ("rl2", ["--env", "bandit", "--arms", "2", "--episodes", "2", "--meta-batch-size", "4", "--hidden-size", "8",
             "--num-minibatches", "1", "--num-eval-tasks", "4", "--no-progress"], None, 1),  # RL^2: one device
])
def test_command_line_chooses_host_devices_on_a_cpu(algo, flags, xla_flags, devices, tmp_path, jax_cache):
    env = subprocess_env(jax_cache)
    env.pop("XLA_FLAGS")
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    out = run_jaxmeta(["train", algo, *flags, "--num-batches", "1", "--checkpoint-every", "0", "--out", str(tmp_path),
                       "--name", "r"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["device_count"] == devices


def test_rl2_config_has_no_cpu_devices():
    from jaxmeta.algorithms import registry

    assert registry.get("rl2").cpu_devices is None and registry.get("snail").cpu_devices is None
    assert registry.get("maml").cpu_devices(MAMLConfig(meta_batch_size=40)) == 40
    assert registry.get("maml").cpu_devices(MAMLConfig(meta_batch_size=100)) == 50



def test_evaluate_in_a_fresh_process_uses_the_runs_host_devices(tmp_path, jax_cache):
    env = subprocess_env(jax_cache)
    env.pop("XLA_FLAGS")
    out = run_jaxmeta(["train", "maml", *TINY, "--num-batches", "1", "--checkpoint-every", "0", "--out", str(tmp_path),
                       "--name", "r"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "r"
    assert json.loads((run / "config.json").read_text())["device_count"] == 4
    out = run_jaxmeta(["evaluate", str(run)], env)
    assert out.returncode == 0, out.stderr[-3000:]
    table = json.loads((run / "final_table.json").read_text())
    again = json.loads(next(run.glob("eval-1-*")).joinpath("table.json").read_text())
    assert again["rows"] == table["rows"]  # the same program on the same 4 devices: the same numbers


# --------------------------------------------------------------------------- CPU simulator
def _chosen(args, capsys):
    """(simulator, env_kwargs) of `jaxmeta train ARGS --print-config`."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from conftest import run_cli

    code, out, err = run_cli(["train", *args, "--print-config"], capsys)
    assert code == 0, err
    printed = tomllib.loads(out)
    return printed["simulator"], printed.get("env_kwargs", {})


def test_maml_locomotion_on_a_cpu_defaults_to_mujoco_in_one_worker_per_core(capsys):
    import os

    cores = len(os.sched_getaffinity(0))
    for env in ("halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal"):
        assert _chosen(["maml", "--env", env], capsys) == ("mujoco", {"num_workers": cores})
    assert _chosen(["maml", "--env", "halfcheetah_vel", "--num-workers", "1"], capsys) == \
        ("mujoco", {"num_workers": 1})  # the user's worker count wins
    assert _chosen(["--config", "maml-halfcheetah-vel"], capsys)[0] == "mujoco"  # the shipped setting too


@pytest.mark.parametrize("args", [
    ["maml", "--env", "halfcheetah_vel", "--simulator", "jax"],  # named
    ["maml", "--env", "halfcheetah_vel", "--simulator", "brax"],
    ["maml", "--env", "halfcheetah_vel", "--seeds", "2"],  # several seeds run inside one XLA program
    ["maml", "--env", "halfcheetah_vel", "--backend", "spring"],  # a Brax backend asked for
    ["rl2", "--env", "halfcheetah_vel"],  # not measured for RL^2
    ["maml", "--env", "navigation2d"],  # no host simulator
])
def test_cpu_simulator_is_left_alone_where_not_measured_or_named(args, capsys):
    assert _chosen(args, capsys)[0] in ("jax", "brax")


def test_cpu_simulator_named_in_a_config_file_wins(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('algorithm = "maml"\nenv = "halfcheetah_vel"\nsimulator = "jax"\n')
    assert _chosen(["--config", str(cfg)], capsys) == ("jax", {})


def test_cpu_simulator_stays_jax_on_an_accelerator_or_without_mujoco(monkeypatch, capsys):
    from jaxmeta import cli

    monkeypatch.setattr(cli, "_cpu_only", lambda: False)
    assert _chosen(["maml", "--env", "halfcheetah_vel"], capsys) == ("jax", {})
    monkeypatch.undo()
    monkeypatch.setattr(cli.envs, "host_simulator_installed", lambda name: False)
    assert _chosen(["maml", "--env", "halfcheetah_vel"], capsys) == ("jax", {})


def test_library_settings_keep_the_jittable_default():
    # the choice is the command line's: RunSettings is the same on every machine
    assert RunSettings("maml", "halfcheetah_vel").simulator == "jax"


def test_cpu_default_locomotion_run_trains_on_mujoco_workers(tmp_path, jax_cache):
    env = subprocess_env(jax_cache)
    out = run_jaxmeta(["train", "maml", "--env", "halfcheetah_vel", "--horizon", "5", "--meta-batch-size", "2",
                       "--num-episodes", "1", "--hidden-sizes", "8", "--num-eval-tasks", "2", "--num-batches", "1",
                       "--checkpoint-every", "0", "--no-progress", "--out", str(tmp_path), "--name", "r"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "halfcheetah_vel (mujoco)" in out.stdout
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["simulator"] == "mujoco" and saved["env_kwargs"]["num_workers"] >= 1
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["pre_return"])
