"""The training driver at scale: vmapped seeds, checkpoints, exact resume, NaN guard."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import cli, driver, envs
from jaxmeta.algorithms import MAMLConfig, RL2Config, maml, registry
from jaxmeta.algorithms.registry import AlgorithmSpec
from jaxmeta.driver import RunSettings
from jaxmeta.driver import checkpoint as ckpt
from conftest import TINY, run_cli, snapshot, subprocess_env, toy_spec  # noqa: E402
from conftest import metrics_rows as rows_without_wall  # noqa: E402

TINY_CONFIG = MAMLConfig(meta_batch_size=4, num_episodes=2, hidden_sizes=(16,), num_eval_tasks=4)


def checkpoint_arrays(run, step):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(Path(run).absolute() / "checkpoints" / str(step) / "state")


QUIET = dict(progress=False, log=lambda s: None)


@pytest.mark.parametrize("nan_in,quantity", [("metric", "metric 'loss'"), ("update", "updated state ['w']")])
def test_nan_stops_the_run_and_keeps_last_good_checkpoint(tmp_path, toy, nan_in, quantity):
    run = tmp_path / "run"
    settings = toy(nan_at=5, nan_in=nan_in, num_batches=10, checkpoint_every=2)
    with pytest.raises(driver.NonFiniteError) as e:
        driver.train(settings, run, **QUIET)
    msg = str(e.value)
    assert "meta-iteration 5" in msg and quantity in msg and "meta-iteration 4) is kept" in msg
    assert ckpt.latest_iteration(run) == 4
    assert [r["iteration"] for r in rows_without_wall(run)] == [1, 2, 3, 4]  # the bad row is not logged
    assert np.all(np.isfinite(checkpoint_arrays(run, 4)["leaf_00001"]))
    # the kept checkpoint resumes; the injected NaN fires again at the same iteration
    with pytest.raises(driver.NonFiniteError, match="meta-iteration 5"):
        driver.train(settings, run, resume=True, **QUIET)


def test_nan_through_cli_is_one_line_error(tmp_path, capsys, monkeypatch):
    spec = toy_spec(nan_at=2)
    monkeypatch.setitem(registry.REGISTRY, "maml", AlgorithmSpec("maml", MAMLConfig, spec.build, "navigation2d",
                                                                  ("navigation2d",)))
    code, out, err = run_cli(["train", "maml", "--out", str(tmp_path), "--name", "n", "--num-batches", "5",
                              "--no-progress", "--horizon", "5"], capsys)
    assert code == 1 and "non-finite value at meta-iteration 2: metric 'loss'" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sigterm_checkpoints_then_stops_and_resume_finishes(tmp_path, toy):
    run = tmp_path / "run"
    settings = toy(num_batches=6)

    def send_term(rows):
        if rows[0]["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(driver.TrainingInterrupted) as e:
        driver.train(settings, run, callback=send_term, **QUIET)
    assert e.value.signum == signal.SIGTERM and "--resume" in str(e.value)
    assert ckpt.latest_iteration(run) == 3 and not (run / "final_table.json").exists()
    resumed = driver.train(settings, run, resume=True, **QUIET)
    straight = driver.train(settings, tmp_path / "straight", **QUIET)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert strip(resumed.metrics) == strip(straight.metrics) and len(resumed.metrics) == 6
    assert np.array_equal(resumed.state["w"], straight.state["w"])
    assert rows_without_wall(run) == strip(straight.metrics)


def test_signature_mismatch_is_a_clear_error(tmp_path, toy):
    run = tmp_path / "run"
    driver.train(toy(num_batches=2), run, **QUIET)
    target = {"state": {"w": jnp.zeros(4), "step": jnp.zeros((), jnp.int32)}, "k_train": np.zeros(2, np.uint32)}
    with pytest.raises(ckpt.CheckpointError, match=r"different training state.*\['w'\] is \(3,\) float32 in the checkpoint, \(4,\)"):
        ckpt.restore(run, target, {})
    with pytest.raises(ckpt.CheckpointError, match="seed is 0 in the checkpoint but 5 here"):
        ckpt.restore(run, target, {"seed": 5})


@pytest.mark.parametrize("field,value", [
    ("num_batches", 0), ("num_batches", 2.5), ("seed", -1), ("num_seeds", 0), ("checkpoint_every", -1),
    ("simulator", "bullet"), ("env", "bandit"), ("algorithm", "sac"), ("config", RL2Config()),
    ("env_kwargs", {"horizon": 0}), ("env_kwargs", {"not_a_field": 1}),
])
def test_run_settings_are_validated_once_naming_the_field(field, value):
    from jaxmeta import ConfigError

    with pytest.raises(ConfigError) as e:
        RunSettings(**{"algorithm": "maml", field: value})
    assert e.value.field in (field, "horizon"), (e.value.field, str(e.value))


def test_run_settings_host_simulator_rules():
    from jaxmeta import ConfigError

    s = RunSettings("rl2", "halfcheetah_vel", {"horizon": 10}, simulator="mujoco")
    assert s.host and s.identity()["simulator"] == "mujoco"
    with pytest.raises(ConfigError, match="simulator 'mujoco' runs halfcheetah_vel") as e:
        RunSettings("maml", "navigation2d", simulator="mujoco")
    assert e.value.field == "simulator"
    with pytest.raises(ConfigError, match="one seed at a time") as e:
        RunSettings("maml", "halfcheetah_vel", simulator="mujoco", num_seeds=2)
    assert e.value.field == "num_seeds"
    # a round trip through config.json's form gives the same settings
    assert RunSettings.from_json(json.loads(json.dumps(s.to_json()))) == s


# --------------------------------------------------------------------------- MAML runs
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny MAML run with checkpoints at 2 and 4 (made through the CLI)."""
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", "maml", *TINY, "--num-batches", "4", "--checkpoint-every", "2",
                     "--out", str(out), "--name", "done"]) == 0
    return out / "done"


def _copy(run, dst):
    import shutil

    shutil.copytree(run, dst)
    return dst


def test_every_checkpoint_corrupt_is_clear_error_and_folder_intact(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path / "run")
    for step in ("2", "4"):  # data of one, metadata of the other
        arrays = [p for p in (run / "checkpoints" / step / "state").rglob("*") if p.is_file() and p.stat().st_size > 100]
        biggest = max(arrays, key=lambda p: p.stat().st_size)
        if step == "4":
            biggest.write_bytes(b"\x00garbage" * (biggest.stat().st_size // 8))
        else:
            next(p for p in (run / "checkpoints" / step / "meta").rglob("*") if p.is_file()).write_text("{not json")
    before = snapshot(run)
    code, out, err = run_cli(["train", "--resume", str(run), "--no-progress"], capsys)
    assert code == 2 and "no checkpoint" in err and "restores" in err and "4: corrupt" in err and "2: corrupt" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and len(err) < 1000
    assert snapshot(run) == before


def test_checkpoint_of_another_algorithm_is_clear_error(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path / "run")
    before = snapshot(run)
    # on the command line
    code, _, err = run_cli(["train", "rl2", "--resume", str(run), "--no-progress"], capsys)
    assert code == 2 and "run of 'maml', not 'rl2'" in err and snapshot(run) == before
    # in the library: the checkpoint's metadata and arrays are checked before anything is written
    config = RL2Config(meta_batch_size=2, episodes_per_trial=2, hidden_size=4, num_eval_tasks=2, num_minibatches=1)
    with pytest.raises(ckpt.CheckpointError, match="algorithm is 'maml' in the checkpoint but 'rl2' here"):
        driver.train(RunSettings("rl2", "navigation2d", {"horizon": 10}, config, num_batches=6), run, resume=True,
                     progress=False)
    # same algorithm, another config (other shapes)
    other = MAMLConfig(meta_batch_size=4, num_episodes=2, hidden_sizes=(8,), num_eval_tasks=4)
    with pytest.raises(ckpt.CheckpointError, match=r"does not match this run: config.hidden_sizes is \[16\] in the checkpoint but \[8\] here"):
        driver.train(RunSettings("maml", "navigation2d", {"horizon": 10}, other, num_batches=6), run, resume=True,
                     progress=False)
    assert snapshot(run) == before


def test_kill_9_then_resume_is_bitwise_identical(tmp_path, jax_cache):
    env = subprocess_env(jax_cache)
    args = ["train", "maml", *TINY, "--num-batches", "8", "--checkpoint-every", "2", "--out", str(tmp_path)]
    # an uninterrupted reference run, alongside the run we kill
    ref = subprocess.Popen([sys.executable, "-m", "jaxmeta.cli", *args, "--name", "ref"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    slow = ("import sys, time\nfrom jaxmeta import cli, driver\norig = driver.train\n"
            "def slow(*a, **k):\n    k['callback'] = lambda rows: time.sleep(0.5)\n    return orig(*a, **k)\n"
            "driver.train = slow\nsys.exit(cli.main(sys.argv[1:]))\n")
    victim = subprocess.Popen([sys.executable, "-c", slow, *args, "--name", "killed"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = tmp_path / "killed"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once checkpoint 4 is complete and iteration 5 is logged
        done = (run / "checkpoints" / "4").is_dir() and (run / "metrics.jsonl").exists() and \
            len((run / "metrics.jsonl").read_text().splitlines()) >= 5
        if done or victim.poll() is not None:
            break
        time.sleep(0.05)
    victim.kill()  # SIGKILL: no handler runs
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, victim.stdout.read().decode()[-2000:]
    assert not (run / "final_table.json").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 5  # rows past the checkpoint
    out = subprocess.run([sys.executable, "-m", "jaxmeta.cli", "train", "--resume", str(run), "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming" in out.stdout
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()[-2000:]
    assert rows_without_wall(run) == rows_without_wall(tmp_path / "ref")
    assert [r["iteration"] for r in rows_without_wall(run)] == list(range(1, 9))
    a, b = checkpoint_arrays(run, 8), checkpoint_arrays(tmp_path / "ref", 8)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((run / "final_table.json").read_text()) == json.loads((tmp_path / "ref" / "final_table.json").read_text())


# --------------------------------------------------------------------------- seeds
def test_cli_seeds_match_separate_runs(tmp_path, capsys):
    code, out, _ = run_cli(["train", "maml", *TINY, "--num-batches", "2", "--seeds", "3", "--seed", "5",
                            "--checkpoint-every", "0", "--out", str(tmp_path), "--name", "s"], capsys)
    assert code == 0 and "mean over 3 seeds" in out
    run = tmp_path / "s"
    rows = rows_without_wall(run)
    assert [(r["iteration"], r["seed"]) for r in rows] == [(i, s) for i in (1, 2) for s in (5, 6, 7)]
    table = json.loads((run / "final_table.json").read_text())
    assert "trained return (std over 3 seeds)" in table["header"] and set(table["per_seed"]) == {"5", "6", "7"}
    assert (run / "returns.png").read_bytes()[:4] == b"\x89PNG"
    # each seed as its own run: what `jaxmeta train maml --seed s` computes
    algo = maml(envs.make("navigation2d", horizon=10), config=TINY_CONFIG)
    step = jax.jit(algo.train_step)
    for s in (5, 6, 7):
        k_init, k_train, _ = jax.random.split(jax.random.PRNGKey(s), 3)
        state = algo.init(k_init)
        for it in range(2):
            state, m = step(state, jax.random.fold_in(k_train, it))
            got = next(r for r in rows if r["seed"] == s and r["iteration"] == it + 1)
            for k, v in m.items():
                np.testing.assert_allclose(got[k], float(v), rtol=2e-3, atol=1e-5, err_msg=f"seed {s} {k}")
    # seeds differ from each other (the test could fail if every seed were seed 5)
    assert len({r["post_return"] for r in rows if r["iteration"] == 1}) == 3


def test_aggregate_tables_mean_and_spread():
    t1 = (["k", "a", "name"], [[0, 1.0, "x"], [1, 3.0, "y"]])
    t2 = (["k", "a", "name"], [[0, 3.0, "x"], [1, 5.0, "y"]])
    header, rows = driver.aggregate_tables([t1, t2])
    assert header == ["k", "a", "name", "a (std over 2 seeds)"]
    assert rows == [[0, 2.0, "x", 1.0], [1, 4.0, "y", 1.0]]
