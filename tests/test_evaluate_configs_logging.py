"""`jaxmeta evaluate`, settings files (`--config`, `--print-config`, shipped configs) and
TensorBoard event files."""
import json
import struct

import pytest

from jaxmeta import driver
from jaxmeta.driver import settings as run_settings
from conftest import TINY, one_line_error, run_cli, tiny_run


# --------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def maml_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), "maml", 3, checkpoint_every=2)


@pytest.fixture(scope="module")
def rl2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    from jaxmeta import cli

    assert cli.main(["train", "rl2", "--env", "bandit", "--arms", "3", "--episodes", "3", "--hidden-size", "8",
                     "--meta-batch-size", "4", "--num-eval-tasks", "16", "--num-batches", "2", "--seeds", "2",
                     "--out", str(out), "--name", "rl2", "--no-progress"]) == 0
    return out / "rl2"


@pytest.mark.parametrize("run", ["maml_run", "rl2_run"])
def test_evaluate_reproduces_the_runs_own_final_table(run, request, capsys):
    path = request.getfixturevalue(run)
    code, out, err = run_cli(["evaluate", str(path)], capsys)
    assert code == 0, err
    final = json.loads((path / "final_table.json").read_text())
    folders = sorted(p for p in path.iterdir() if p.name.startswith("eval-"))
    assert len(folders) == 1
    evaluated = json.loads((folders[0] / "table.json").read_text())
    assert evaluated["header"] == final["header"] and evaluated["rows"] == final["rows"]
    if "per_seed" in final:  # several seeds: each seed's table too
        assert evaluated["per_seed"] == final["per_seed"]
    assert (folders[0] / "adaptation.png").read_bytes()[:4] == b"\x89PNG"
    assert (folders[0] / "table.txt").read_text().splitlines()[2:] == \
        (path / "final_table.txt").read_text().splitlines()[2:]


def test_evaluate_with_other_tasks_steps_seed_and_checkpoint(maml_run, capsys):
    code, out, err = run_cli(["evaluate", str(maml_run), "--num-tasks", "6", "--steps", "3", "--seed", "7",
                              "--checkpoint", "2"], capsys)
    assert code == 0, err
    folder = maml_run / "eval-2-6tasks-3steps-seed7"
    table = json.loads((folder / "table.json").read_text())
    assert [r[0] for r in table["rows"]] == [0, 1, 2, 3]  # returns after 0..3 inner steps
    assert table["checkpoint"] == 2 and table["num_tasks"] == 6
    final = json.loads((maml_run / "final_table.json").read_text())
    assert table["rows"][0][2] != final["rows"][0][2]  # other tasks, other numbers


@pytest.mark.parametrize("args,expect", [
    (["--checkpoint", "5"], "has no checkpoint 5"), (["--num-tasks", "0"], "num_tasks"), (["--steps", "0"], "steps"),
])
def test_evaluate_bad_input_is_one_line(maml_run, args, expect, capsys):
    code, _, err = run_cli(["evaluate", str(maml_run), *args], capsys)
    assert code == 2 and expect in one_line_error(err)


def test_evaluate_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", str(tmp_path)], capsys)
    assert code == 2 and "config.json" in one_line_error(err)


# --------------------------------------------------------------------------- settings files
def test_config_file_and_flags_merge_with_flags_winning(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('algorithm = "maml"\nenv = "navigation2d"\nnum_batches = 7\nseed = 3\n'
                   '[env_kwargs]\nhorizon = 12\n[config]\nmeta_batch_size = 6\ninner_lr = 0.2\n')
    code, out, _ = run_cli(["train", "--config", str(cfg), "--inner-lr", "0.3", "--seed", "4", "--print-config"],
                           capsys)
    assert code == 0
    merged = tmp_path / "merged.toml"
    merged.write_text(out)
    back = run_settings.read_settings_file(merged)
    assert back["num_batches"] == 7 and back["seed"] == 4  # file, then flag
    assert back["config"]["meta_batch_size"] == 6 and back["config"]["inner_lr"] == 0.3
    assert back["env_kwargs"] == {"horizon": 12}
    # the printed settings are a config file that gives the same run
    assert run_settings.merge_settings(back, None, None, {}, {}, {}) == \
        run_settings.merge_settings(run_settings.read_settings_file(cfg), None, None, {"inner_lr": 0.3}, {}, {"seed": 4})
    assert not any(p.name == "runs" for p in tmp_path.iterdir())  # --print-config trains nothing


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "algorithm: maml\nconfig:\n  meta_batch_size: 6\n"),
    (".json", '{"algorithm": "maml", "config": {"meta_batch_size": 6}}'),
])
def test_yaml_and_json_config_files(suffix, text, tmp_path):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    s = run_settings.merge_settings(run_settings.read_settings_file(path), None, None, {}, {}, {})
    assert s.algorithm == "maml" and s.config.meta_batch_size == 6


@pytest.mark.parametrize("text,expect", [
    ('algorithm = "maml"\nnum_batchs = 3\n', "unknown key 'num_batchs'"),
    ('algorithm = "maml"\n[config]\ninner_lrr = 0.1\n', "'inner_lrr' is not a field of MAMLConfig"),
    ('algorithm = "maml"\n[env_kwargs]\nhorizn = 3\n', "horizn"),
    ('algorithm = "maml"\n[config]\nmeta_batch_size = 0\n', "meta_batch_size must be"),
    ('algorithm = "maml"\nnum_batches = = 3\n', "does not parse"),
])
def test_config_file_errors_name_the_key(text, expect, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    code, _, err = run_cli(["train", "--config", str(cfg), "--out", str(tmp_path / "runs")], capsys)
    line = one_line_error(err)
    assert code == 2 and expect in line, line
    assert not (tmp_path / "runs").exists()


def test_every_shipped_config_builds_its_run():
    shipped = run_settings.shipped_configs()
    assert {"maml-navigation", "maml-halfcheetah-vel", "maml-halfcheetah-dir", "maml-ant-dir", "maml-ant-goal",
            "promp-halfcheetah-dir", "rl2-bandit-k5-n10", "snail-bandit-k5-n10"} <= set(shipped)
    for name, path in shipped.items():
        s = run_settings.merge_settings(run_settings.read_settings_file(name), None, None, {}, {}, {})
        # published settings train long (a model-based iteration is a real-data iteration of many policy steps)
        assert s.algorithm in path.read_text() and s.num_batches >= (20 if s.algorithm == "mbmpo" else 100), name
        assert path.read_text().startswith("# "), f"{name} says where its numbers come from"
    nav = run_settings.merge_settings(run_settings.read_settings_file("maml-navigation"), None, None, {}, {}, {})
    assert (nav.config.meta_batch_size, nav.config.num_episodes, nav.num_batches) == (20, 20, 500)


# --------------------------------------------------------------------------- TensorBoard
def _events(run):
    """Scalars (tag -> [(step, value)]) of a run's TensorBoard event files."""
    from tensorboardX.proto import event_pb2

    scalars: dict = {}
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars


def test_event_file_holds_the_logged_scalars(maml_run):
    scalars = _events(maml_run)
    rows = [json.loads(line) for line in (maml_run / "metrics.jsonl").read_text().splitlines()]
    for key in ("pre_return", "post_return", "kl", "grad_norm"):
        assert [s for s, _ in scalars[key]] == [r["iteration"] for r in rows]
        assert [v for _, v in scalars[key]] == pytest.approx([r[key] for r in rows], rel=1e-6)
    final = json.loads((maml_run / "final_table.json").read_text())
    assert [v for _, v in scalars["adaptation/trained"]] == pytest.approx([r[2] for r in final["rows"]], rel=1e-6)


def test_seeds_are_separate_tensorboard_tags(rl2_run):
    scalars = _events(rl2_run)
    assert {"seed_0/trial_reward", "seed_1/trial_reward"} <= set(scalars)


def test_no_tensorboard_writes_no_event_files(tmp_path, capsys):
    code, _, _ = run_cli(["train", "maml", *TINY, "--num-batches", "1", "--no-tensorboard", "--out", str(tmp_path),
                          "--name", "r"], capsys)
    assert code == 0 and not (tmp_path / "r" / "tensorboard").exists()
    assert driver.loggers.TENSORBOARD_DIR == "tensorboard"
