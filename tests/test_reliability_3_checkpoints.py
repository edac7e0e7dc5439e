"""Class 3: a corrupt newest checkpoint does not block a run that has good older ones:
the run resumes from the newest checkpoint that restores, says so in one line, keeps the
broken one aside, and removes unfinished checkpoints left by kills."""
import shutil

import pytest

from jaxmeta.driver import checkpoint as ckpt
from conftest import metrics_rows, one_line_error, run_cli, snapshot, tiny_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny MAML run with checkpoints at 2, 4 and 6."""
    return tiny_run(tmp_path_factory.mktemp("runs"), "done", 6, checkpoint_every=2)


def _truncate_arrays(step_dir):
    for p in (step_dir / "state").rglob("*"):
        if p.is_file() and p.stat().st_size > 100:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


def test_corrupt_newest_checkpoint_falls_back_to_the_newest_good_one(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _truncate_arrays(run / "checkpoints" / "6")
    code, out, err = run_cli(["train", "--resume", str(run), "--num-batches", "8", "--no-progress"], capsys)
    assert code == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and "tensorstore" not in (out + err)
    said = [line for line in out.splitlines() if "checkpoint 6" in line]
    assert len(said) == 1 and "is corrupt" in said[0] and "resuming from checkpoint 4" in said[0], out
    assert len(said[0]) < 400
    assert "resuming" in out and "from meta-iteration 4" in out
    # the broken checkpoint is kept aside, out of the way of orbax
    assert (run / ckpt.CORRUPT_DIR / "6").is_dir() and ckpt.steps(run) == [4, 6, 8]
    # and the result is the uninterrupted run's: iterations 5 and 6 were redone identically
    rows = metrics_rows(run)
    assert [r["iteration"] for r in rows] == list(range(1, 9))
    assert rows[:6] == metrics_rows(finished)


def test_no_checkpoint_restores_is_one_short_line_and_changes_nothing(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for step in ("2", "4", "6"):
        _truncate_arrays(run / "checkpoints" / step)
    before = snapshot(run)
    code, out, err = run_cli(["train", "--resume", str(run), "--no-progress"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "no checkpoint" in line and "restores" in line and all(f"{s}: corrupt" in line for s in (2, 4, 6))
    assert len(line) < 1000 and "tensorstore_spec" not in line
    assert snapshot(run) == before


def test_unfinished_checkpoints_left_by_kills_are_removed(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    stale = run / "checkpoints" / f"8{ckpt.TMP_MARK}-1234"
    shutil.copytree(run / "checkpoints" / "6", stale)
    assert ckpt.temporary(run) == [stale]
    code, _, err = run_cli(["train", "--resume", str(run), "--num-batches", "7", "--no-progress"], capsys)
    assert code == 0, err
    assert ckpt.temporary(run) == [] and ckpt.steps(run) == [4, 6, 7]


def test_manifest_detects_a_changed_file_that_orbax_would_read_silently(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    step = run / "checkpoints" / "6"
    assert ckpt.check_manifest(step) is None
    meta = next(p for p in (step / "meta").rglob("*") if p.is_file() and p.name != "commit_success.txt")
    meta.write_bytes(meta.read_bytes().replace(b'"seed"', b'"seeD"'))
    reason = ckpt.check_manifest(step)
    assert reason is not None and "changed since it was written" in reason


def test_a_config_field_added_after_the_checkpoint_matches_at_its_default():
    """A run saved before a config field existed resumes when the field is at its default
    (the value the older code ran with), and only then."""
    from jaxmeta.algorithms.black_box import RL2Config
    from jaxmeta.driver.checkpoint import _differences
    from jaxmeta.driver.settings import RunSettings

    s = RunSettings("rl2", "bandit", {}, RL2Config(hidden_size=8))
    want, defaults = s.identity(), s.identity_defaults()
    old = {k: dict(v) if isinstance(v, dict) else v for k, v in want.items()}
    del old["config"]["cell"]  # written by a version without the field
    assert [d for k, v in want.items() for d in _differences(old.get(k), v, k, defaults.get(k))] == []
    lstm = RunSettings("rl2", "bandit", {}, RL2Config(hidden_size=8, cell="lstm"))
    diffs = [d for k, v in lstm.identity().items() for d in _differences(old.get(k), v, k, defaults.get(k))]
    assert diffs == ["config.cell is missing in the checkpoint (here 'lstm')"]
    # without defaults the check stays exact
    assert _differences(old["config"], want["config"], "config") == ["config.cell is missing in the checkpoint (here 'gru')"]


def test_cleanup_after_a_failed_save_outlasts_a_late_write(tmp_path):
    """A failed save's writer can recreate its temporary folder after the first removal;
    the cleanup keeps removing until none reappears."""
    import threading
    import time

    tmp = tmp_path / ckpt.CHECKPOINT_DIR / f"3{ckpt.TMP_MARK}-1"
    (tmp / "state").mkdir(parents=True)

    def late_writer():  # recreates the folder once, a moment after it is first removed
        deadline = time.monotonic() + 5.0
        while tmp.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)
        (tmp / "state").mkdir(parents=True)

    writer = threading.Thread(target=late_writer)
    writer.start()
    ckpt._remove_temporary_settled(tmp_path)
    writer.join()
    assert ckpt.temporary(tmp_path) == []
