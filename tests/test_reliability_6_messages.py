"""Class 6: messages name what is wrong, in one short line."""
import json
import shutil

import pytest

from conftest import one_line_error, run_cli, snapshot, tiny_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), "done", 1)


@pytest.mark.parametrize("flag,value", [("--inner-lr", "0.5"), ("--horizon", "7"), ("--hidden-sizes", "4,4"),
                                        ("--seed", "3"), ("--simulator", "jax")])
def test_a_config_flag_with_resume_names_the_flag(finished, flag, value, capsys):
    before = snapshot(finished)
    code, _, err = run_cli(["train", "--resume", str(finished), flag, value], capsys)
    line = one_line_error(err)
    assert code == 2 and f"argument {flag}: not allowed with --resume" in line, line
    assert snapshot(finished) == before


def test_unknown_env_with_an_env_flag_names_the_env(tmp_path, capsys):
    code, _, err = run_cli(["train", "maml", "--env", "navigaton2d", "--horizon", "5", "--out", str(tmp_path)], capsys)
    line = one_line_error(err)
    assert code == 2 and "argument --env: unknown environment 'navigaton2d'" in line and "navigation2d" in line


def test_a_config_mismatch_on_resume_names_the_differing_fields(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    saved = json.loads((run / "config.json").read_text())
    saved["config"].update(inner_lr=0.5, gamma=0.9)  # a hand-edit that no longer matches the checkpoint
    (run / "config.json").write_text(json.dumps(saved))
    before = snapshot(run)
    code, _, err = run_cli(["train", "--resume", str(run)], capsys)
    line = one_line_error(err)
    assert code == 2 and "config.inner_lr is 0.1 in the checkpoint but 0.5 here" in line
    assert "config.gamma is 0.99 in the checkpoint but 0.9 here" in line
    assert len(line) < 500 and "hidden_sizes" not in line  # the fields that differ, not both whole configs
    assert snapshot(run) == before


def test_tuple_defaults_are_valid_flag_values(tmp_path, capsys, monkeypatch):
    from jaxmeta import driver

    seen = {}
    monkeypatch.setattr(driver, "train", lambda settings, run_dir, **kw: seen.update(settings=settings))
    code, _, err = run_cli(["train", "snail", "--blocks", "tc,tc,attn", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert seen["settings"].config.blocks == ("tc", "tc", "attn")
    code, _, err = run_cli(["train", "snail", "--blocks", "tc,lstm", "--out", str(tmp_path)], capsys)
    assert code == 2 and "argument --blocks" in one_line_error(err) and "'lstm'" in err


@pytest.mark.parametrize("args,flag", [
    (["maml", "--meta-batch-size", "0"], "--meta-batch-size"), (["maml", "--num-batches", "-1"], "--num-batches"),
    (["maml", "--seeds", "0"], "--seeds"), (["maml", "--checkpoint-every", "-2"], "--checkpoint-every"),
    (["rl2", "--arms", "1"], "--arms"), (["rl2", "--episodes", "0"], "--episodes"), (["snail", "--filters", "0"], "--filters"),
    (["maml", "--env", "bandit"], "--env"), (["rl2", "--env", "tabular_mdp", "--num-states", "1"], "--num-states"),
    (["maml", "--outer", "sgd"], "--outer"), (["maml", "--activation", "gelu"], "--activation"),
    (["maml", "--simulator", "bullet"], "--simulator"), (["maml", "--coordinator-timeout", "0"], "--coordinator-timeout"),
])
def test_bad_flags_stay_one_line_naming_the_flag(args, flag, tmp_path, capsys):
    code, _, err = run_cli(["train", *args, "--out", str(tmp_path)], capsys)
    line = one_line_error(err)
    assert code == 2 and flag in line, line
    assert list(tmp_path.iterdir()) == []
