import json
from pathlib import Path

import pytest

from conftest import run_cli  # noqa: E402  (tests/ is on sys.path under pytest)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--meta-batch-size", "0"], "--meta-batch-size"),
        (["--gamma", "1.5"], "--gamma"),
        (["--inner-lr", "-1"], "--inner-lr"),
        (["--outer", "sgd"], "--outer"),
        (["--hidden-sizes", "64,x"], "--hidden-sizes"),
        (["--horizon", "0"], "--horizon"),
        (["--num-batches", "0"], "--num-batches"),
        (["--seed", "-2"], "--seed"),
        (["--env", "bandit"], "--env"),
        (["--meta-batch-size", "abc"], "--meta-batch-size"),
    ],
)
def test_bad_flag_is_one_line_error_naming_the_flag(args, flag, capsys, tmp_path):
    code, out, err = run_cli(["train", "maml", "--out", str(tmp_path), *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written for a rejected command


def test_list_names_algorithms_and_envs(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0 and "maml" in out and "navigation2d" in out and "bandit" in out


def test_train_writes_run_folder(tmp_path, capsys):
    code, out, _ = run_cli(
        ["train", "maml", "--env", "navigation2d", "--num-batches", "2", "--meta-batch-size", "2",
         "--num-episodes", "2", "--horizon", "10", "--num-eval-tasks", "3", "--out", str(tmp_path),
         "--name", "t", "--no-progress"],
        capsys,
    )
    assert code == 0
    run = tmp_path / "t"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["meta_batch_size"] == 2 and cfg["env_kwargs"] == {"horizon": 10}
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and all("post_return" in r for r in rows)
    assert (run / "returns.png").read_bytes()[:4] == b"\x89PNG"
    table = json.loads((run / "final_table.json").read_text())
    assert [r[0] for r in table["rows"]] == [0, 1]
    assert "adaptation steps" in out and "trained return" in out
    # a second run with the same name never overwrites the first
    code, _, _ = run_cli(
        ["train", "maml", "--num-batches", "1", "--meta-batch-size", "2", "--num-episodes", "2",
         "--horizon", "5", "--num-eval-tasks", "2", "--out", str(tmp_path), "--name", "t", "--no-progress"],
        capsys,
    )
    assert code == 0 and (tmp_path / "t-2" / "metrics.jsonl").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_readme_commands_and_ci_agree():
    lines = (ROOT / "README.md").read_text().splitlines()
    cmds = [l for l in lines[:12] if l.startswith("python3 -m venv")]
    assert len(cmds) == 2
    assert "jaxmeta train maml --env navigation2d" in cmds[0]
    assert "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "pytest" in ci


NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_per_family():
    assert {"quickstart.ipynb", "black_box.ipynb", "metaworld.ipynb", "mazes.ipynb", "model_based.ipynb"} <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name):
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    # no function or class definitions in the notebook: the logic lives in jaxmeta
    assert not any(l.lstrip().startswith(("def ", "class ")) for c in nb.cells if c.cell_type == "code" for l in c.source.splitlines())


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--outer", "promp"], {"outer": "promp", "meta_batch_size": 40, "inner_estimator": "lvc"}),
        (["--outer=promp", "--meta-batch-size", "3"], {"outer": "promp", "meta_batch_size": 3}),
        (["--outer", "adam"], {"outer": "adam", "meta_batch_size": 20, "inner_estimator": "vpg"}),
        ([], {"outer": "trpo", "meta_batch_size": 20}),
    ],
)
def test_outer_update_is_a_config_field_with_its_own_defaults(argv, expect, tmp_path, capsys, monkeypatch):
    from jaxmeta import driver

    seen = {}
    monkeypatch.setattr(driver, "train", lambda settings, run_dir, **kw: seen.update(settings=settings))
    code, _, err = run_cli(["train", "maml", *argv, "--out", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    settings = seen["settings"]
    assert settings.algorithm == "maml" and settings.simulator == "jax"
    assert {k: getattr(settings.config, k) for k in expect} == expect


def test_simulator_flag_is_a_run_setting(tmp_path, capsys, monkeypatch):
    from jaxmeta import driver

    seen = {}
    monkeypatch.setattr(driver, "train", lambda settings, run_dir, **kw: seen.update(settings=settings))
    code, _, _ = run_cli(["train", "rl2", "--env", "halfcheetah_vel", "--simulator", "mujoco", "--out",
                          str(tmp_path)], capsys)
    assert code == 0 and seen["settings"].simulator == "mujoco" and seen["settings"].host
    code, _, err = run_cli(["train", "maml", "--simulator", "mujoco", "--out", str(tmp_path)], capsys)
    assert code == 2 and "argument --simulator" in err and "navigation2d" in err
    code, _, err = run_cli(["train", "maml", "--env", "halfcheetah_vel", "--simulator", "mujoco", "--seeds", "2",
                            "--out", str(tmp_path)], capsys)
    assert code == 2 and "argument --seeds" in err and len(err.strip().splitlines()) == 1


def test_promp_trains_from_the_maml_spelling(tmp_path, capsys):
    code, out, _ = run_cli(
        ["train", "maml", "--outer", "promp", "--num-batches", "1", "--meta-batch-size", "2",
         "--num-episodes", "2", "--horizon", "10", "--num-eval-tasks", "2", "--out", str(tmp_path),
         "--name", "p", "--no-progress"],
        capsys,
    )
    assert code == 0
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved["algorithm"] == "maml" and saved["config"]["outer"] == "promp"
    assert saved["config"]["inner_estimator"] == "lvc"
