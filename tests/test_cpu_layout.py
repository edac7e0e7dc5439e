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
