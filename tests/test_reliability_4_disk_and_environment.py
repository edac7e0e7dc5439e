"""Class 4: disk, path and environment failures end in one `jaxmeta: error:` line naming
the file, flag or field, with the right exit code, and leave the run folder usable."""
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from jaxmeta.driver import checkpoint as ckpt
from conftest import TINY, jaxmeta_cmd, metrics_rows, one_line_error, run_cli, snapshot, subprocess_env, tiny_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), "done", 2, checkpoint_every=1)


def _copy(run, dst):
    shutil.copytree(run, dst)
    return dst


@contextlib.contextmanager
def read_only(path, monkeypatch):
    """Make `path` unwritable for this process: chmod (non-root), the immutable flag
    (root, where chattr works), else a patched write probe (the same code path)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            with pytest.raises(OSError):
                (path / "probe").write_text("x")
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    import tempfile

    real = tempfile.TemporaryFile

    def probe(*a, dir=None, **k):
        if dir is not None and os.path.realpath(dir) == os.path.realpath(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "TemporaryFile", probe)
    yield


def test_out_through_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    code, _, err = run_cli(["train", "maml", *TINY, "--num-batches", "1", "--out", str(tmp_path / "afile" / "sub")],
                           capsys)
    assert code == 2 and "argument --out" in one_line_error(err) and "is a file, not a folder" in err


def test_unwritable_out_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    with read_only(out, monkeypatch):
        code, _, err = run_cli(["train", "maml", *TINY, "--num-batches", "1", "--out", str(out), "--name", "r"],
                               capsys)
    line = one_line_error(err)
    assert code == 2 and ("argument --out" in line or "cannot write" in line) and str(out) in line
    assert list(out.iterdir()) == []


def test_read_only_run_folder_is_refused_before_anything_runs(finished, tmp_path, capsys, monkeypatch):
    run = _copy(finished, tmp_path / "run")
    before = snapshot(run)
    with read_only(run, monkeypatch):
        code, _, err = run_cli(["train", "--resume", str(run), "--num-batches", "3", "--no-progress"], capsys)
    line = one_line_error(err)
    assert code == 2 and "cannot write to" in line and str(run) in line
    assert snapshot(run) == before


@contextlib.contextmanager
def small_disk(path, size: str):
    """A tmpfs of `size` at `path` (root, where mounting is allowed); None otherwise."""
    path.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                              capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", str(path)], check=True)


def test_full_disk_at_the_first_save_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    disk = tmp_path / "disk"
    with small_disk(disk, "48k") as real:
        if not real:  # no tmpfs here: the disk fills up at orbax's save instead
            import orbax.checkpoint as ocp

            def full(self, *a, **k):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(ocp.CheckpointManager, "save", full)
        code, _, err = run_cli(["train", "maml", *TINY, "--num-batches", "2", "--checkpoint-every", "1",
                                "--out", str(disk), "--name", "r"], capsys)
        run = disk / "r"
        line = one_line_error(err)
        assert code == 2 and "cannot write" in line and "no space left on device" in line.lower(), line
        assert ckpt.temporary(run) == []  # no half-written checkpoint is left behind
        assert (run / "config.json").exists()
        if real:
            subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        else:
            monkeypatch.undo()
        # space freed: the same run resumes (from its start: it has no checkpoint) and finishes
        code, out, err = run_cli(["train", "--resume", str(run), "--no-progress"], capsys)
        assert code == 0, err
        assert [r["iteration"] for r in metrics_rows(run)] == [1, 2] and ckpt.steps(run) == [1, 2]


@pytest.mark.parametrize("edit,expect", [
    (lambda c: c["config"].update(meta_batch_size=0), "meta_batch_size must be an integer"),
    (lambda c: c.update(env="navigation3d"), "'env'"),
    (lambda c: c.pop("algorithm"), "has no 'algorithm' field"),
    (lambda c: c["config"].update(inner_lrr=0.5), "'inner_lrr' is not a field of MAMLConfig"),
    (lambda c: c["env_kwargs"].update(horizon=-3), "horizon must be an integer"),
])
def test_hand_edited_config_json_is_one_line_naming_file_and_field(finished, tmp_path, capsys, edit, expect):
    run = _copy(finished, tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    edit(saved)
    (run / "config.json").write_text(json.dumps(saved))
    before = snapshot(run)
    code, _, err = run_cli(["train", "--resume", str(run), "--no-progress"], capsys)
    line = one_line_error(err)
    assert code == 2 and "config.json" in line and expect in line, line
    assert snapshot(run) == before


def test_unreadable_config_json_is_one_line(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    (run / "config.json").write_text("{half")
    code, _, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and "config.json is not readable JSON" in one_line_error(err)


@pytest.mark.parametrize("address", ["localhost", "localhost:99999", ":1234", "localhost:port", "localhost:0"])
def test_malformed_coordinator_is_one_line(address, tmp_path, capsys):
    code, _, err = run_cli(["train", "maml", *TINY, "--coordinator", address, "--out", str(tmp_path)], capsys)
    assert code == 2 and "argument --coordinator" in one_line_error(err)
    assert list(tmp_path.iterdir()) == []


def test_double_ctrl_c_within_20_ms_is_one_line_and_leaves_a_resumable_run(tmp_path, jax_cache):
    env = subprocess_env(jax_cache)
    slow = ("import sys, time\nfrom jaxmeta import cli, driver\norig = driver.train\n"
            "def slow(*a, **k):\n    k['callback'] = lambda rows: time.sleep(0.3)\n    return orig(*a, **k)\n"
            "driver.train = slow\nsys.exit(cli.main(sys.argv[1:]))\n")
    args = ["train", "maml", *TINY, "--num-batches", "40", "--checkpoint-every", "1", "--out", str(tmp_path),
            "--name", "r"]
    proc = subprocess.Popen([sys.executable, "-c", slow, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    run = tmp_path / "r"
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "checkpoints" / "2").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    line = one_line_error(err)
    assert "SIGINT" in line and "--resume" in line, line
    assert ckpt.temporary(run) == []
    out = subprocess.run(jaxmeta_cmd("train", "--resume", str(run), "--num-batches", "5", "--no-progress"), env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [r["iteration"] for r in metrics_rows(run)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("args", [
    ["maml", "--meta-batch-size", "100000", "--num-episodes", "100000"],
    ["rl2", "--episodes", "100000", "--meta-batch-size", "1000000", "--num-minibatches", "1"],
])
def test_sizes_beyond_the_machine_are_refused_before_compiling(args, tmp_path, capsys):
    t0 = time.perf_counter()
    code, _, err = run_cli(["train", *args, "--out", str(tmp_path), "--name", "big", "--no-progress"], capsys)
    line = one_line_error(err)
    assert code == 2 and "needs at least" in line and "GiB" in line and "lower the batch sizes" in line, line
    assert time.perf_counter() - t0 < 60  # shapes only: nothing was compiled or allocated
    assert not (tmp_path / "big").exists()
