"""Class 1: two processes on one run folder. The folder has one owner; a second process
is refused with one line, and a crashed owner never leaves it stuck."""
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxmeta import driver
from conftest import TINY, jaxmeta_cmd, metrics_rows, one_line_error, run_jaxmeta, subprocess_env

SLOW = ("import sys, time\nfrom jaxmeta import cli, driver\norig = driver.train\n"
        "def slow(*a, **k):\n    k['callback'] = lambda rows: time.sleep(0.4)\n    return orig(*a, **k)\n"
        "driver.train = slow\nsys.exit(cli.main(sys.argv[1:]))\n")


def _wait_for_rows(run, n, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the first run did not reach {n} rows")


def test_second_process_on_a_run_folder_is_refused_and_a_killed_owner_frees_it(tmp_path, jax_cache):
    env = subprocess_env(jax_cache)
    run = tmp_path / "run"
    args = ["train", "maml", *TINY, "--num-batches", "12", "--checkpoint-every", "2", "--out", str(tmp_path),
            "--name", "run"]
    owner = subprocess.Popen([sys.executable, "-c", SLOW, *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        _wait_for_rows(run, 3, owner)
        # a second process on the same folder: refused at once, and the folder is untouched by it
        second = run_jaxmeta(["train", "--resume", str(run), "--num-batches", "40", "--no-progress"], env)
        assert second.returncode == 2
        line = one_line_error(second.stderr)
        assert "is in use by another jaxmeta process" in line and f"pid {owner.pid}" in line, line
        assert owner.poll() is None  # the owner runs on
        _wait_for_rows(run, 6, owner)
    finally:
        owner.send_signal(signal.SIGKILL)  # a crash: no handler, no clean-up
        owner.wait()
    rows = metrics_rows(run)
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))  # no duplicated or interleaved rows
    # the dead owner's lock went with it: the run resumes and finishes
    done = run_jaxmeta(["train", "--resume", str(run), "--no-progress"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["iteration"] for r in metrics_rows(run)] == list(range(1, 13))


def test_ownership_is_exclusive_within_a_process_too(tmp_path):
    folder = driver.RunFolder(tmp_path)
    with folder.own():
        with pytest.raises(driver.RunFolderError, match=f"in use by another jaxmeta process \\(pid {os.getpid()}\\)"):
            with driver.RunFolder(tmp_path).own():
                pass
    with folder.own():  # released on exit
        pass
    assert list(tmp_path.iterdir()) == []  # owning adds no file to the folder


def test_new_run_folders_are_claimed_atomically(tmp_path):
    made = {driver.new_run_dir(tmp_path, "r") for _ in range(3)}
    assert made == {tmp_path / "r", tmp_path / "r-2", tmp_path / "r-3"}


def test_two_cli_runs_with_one_name_get_two_folders(tmp_path, jax_cache):
    env = subprocess_env(jax_cache)
    args = ["train", "maml", *TINY, "--num-batches", "1", "--checkpoint-every", "0", "--out", str(tmp_path),
            "--name", "same"]
    procs = [subprocess.Popen(jaxmeta_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same", "same-2"]
    for name in ("same", "same-2"):
        assert [r["iteration"] for r in metrics_rows(tmp_path / name)] == [1]
