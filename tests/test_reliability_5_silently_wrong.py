"""Class 5: inputs that used to be accepted and then did something else than asked."""
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from jaxmeta import ConfigError, driver
from jaxmeta.algorithms import MAMLConfig, RL2Config
from conftest import TINY, jaxmeta_cmd, metrics_rows, one_line_error, run_cli, run_jaxmeta, snapshot, subprocess_env


@pytest.mark.parametrize("name", ["../escaped_run", "a/b", "..", "", "/abs"])
def test_run_name_cannot_leave_the_runs_folder(name, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = run_cli(["train", "maml", *TINY, "--num-batches", "1", "--out", str(out), "--name", name], capsys)
    assert code == 2 and "argument --name" in one_line_error(err)
    assert list(tmp_path.iterdir()) == []  # nothing written, inside or outside --out


@pytest.mark.parametrize("flags", [["--outer", "adam", "--max-kl", "0.05"], ["--outer", "adam", "--cg-iters", "5"],
                                   ["--clip-eps", "0.2"], ["--outer", "promp", "--ls-backtrack-ratio", "0.5"]])
def test_settings_the_chosen_outer_update_ignores_are_refused(flags, tmp_path, capsys):
    code, _, err = run_cli(["train", "maml", *TINY, *flags, "--out", str(tmp_path)], capsys)
    line = one_line_error(err)
    assert code == 2 and f"argument {flags[-2]}" in line and "is a setting of outer=" in line, line


def test_coordinator_with_an_impossible_port_is_refused(tmp_path, capsys):
    code, _, err = run_cli(["train", "maml", *TINY, "--coordinator", "localhost:99999", "--out", str(tmp_path)], capsys)
    assert code == 2 and "argument --coordinator" in one_line_error(err) and "[1, 65535]" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("process_id", [1, 0])
def test_a_process_whose_peers_never_come_says_so_and_stops(process_id, tmp_path, jax_cache):
    """Process 1 with no process 0 (or process 0 alone) waits --coordinator-timeout, then one line."""
    env = subprocess_env(jax_cache)
    t0 = time.monotonic()
    out = run_jaxmeta(["train", "maml", *TINY, "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
                       "--process-id", str(process_id), "--name", "d", "--out", str(tmp_path / "runs"),
                       "--coordinator-timeout", "3"], env, timeout=120)
    assert out.returncode == 2
    assert "waiting up to 3 s" in out.stdout  # it says what it waits for before waiting
    line = one_line_error(out.stderr)
    assert ("no process 0 is listening" in line) if process_id else ("not all 2 processes connected" in line)
    assert time.monotonic() - t0 < 90 and not (tmp_path / "runs").exists()


def test_sigterm_during_start_up_says_so_and_the_run_resumes_identically(tmp_path, capsys, jax_cache):
    env = subprocess_env(jax_cache)
    args = ["train", "maml", *TINY, "--num-batches", "3", "--out", str(tmp_path)]
    proc = subprocess.Popen(jaxmeta_cmd(*args, "--name", "r"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    run = tmp_path / "r"
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "config.json").exists():  # start-up: written, not yet trained
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    rows = metrics_rows(run)
    if proc.returncode == 0:  # (the whole tiny run beat the signal on an idle machine)
        pytest.fail("the run finished before SIGTERM arrived; make the start-up longer")
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    line = one_line_error(err)
    assert "SIGTERM" in line and "--resume" in line, line
    if not rows:
        assert "during start-up" in line
    # the folder resumes (from its start, or its last checkpoint) to what an uninterrupted run gives
    code, _, err = run_cli(["train", "--resume", str(run), "--no-progress"], capsys)
    assert code == 0, err
    code, _, _ = run_cli([*args, "--name", "ref"], capsys)
    assert code == 0 and metrics_rows(run) == metrics_rows(tmp_path / "ref")


def test_numpy_scalars_are_valid_config_values():
    c = MAMLConfig(inner_lr=np.float32(0.1), meta_batch_size=np.int64(4), num_episodes=np.int32(2),
                   hidden_sizes=(np.int64(8),), first_order=np.bool_(True))
    assert c.meta_batch_size == 4 and c.inner_lr == pytest.approx(0.1)
    assert RL2Config(lr=np.float64(1e-3), hidden_size=np.int16(8)).hidden_size == 8
    settings = driver.RunSettings("maml", config=c, num_batches=np.int64(2), seed=np.int32(3))
    assert driver.RunSettings.from_json(settings.to_json()).identity() == settings.identity()
    with pytest.raises(ConfigError, match="meta_batch_size"):
        MAMLConfig(meta_batch_size=np.float32(4.0))
    with pytest.raises(ConfigError, match="first_order"):
        MAMLConfig(first_order=np.int64(1))


def test_the_library_entry_point_never_replaces_an_existing_run(tmp_path):
    run = tmp_path / "run"
    settings = driver.RunSettings("maml", "navigation2d", {"horizon": 5},
                                  MAMLConfig(meta_batch_size=2, num_episodes=2, hidden_sizes=(8,), num_eval_tasks=2),
                                  num_batches=1, checkpoint_every=0)
    driver.train(settings, run, progress=False, log=lambda s: None)
    import shutil

    shutil.rmtree(run / "checkpoints")  # a run whose checkpoints are gone is still a run
    before = snapshot(run)
    with pytest.raises(driver.RunFolderError, match="already holds a run"):
        driver.run("maml", "navigation2d", settings.config, env_kwargs={"horizon": 5}, num_batches=1, run_dir=run,
                   progress=False, log=lambda s: None)
    assert snapshot(run) == before
