"""`jaxmeta reproduce TABLE`: every cell trains from its shipped config, the comparison
with the paper is written after each cell, and a second run picks up where the first
stopped."""
import json

from jaxmeta.driver import reproduce
from jaxmeta.driver.settings import shipped_configs
from conftest import one_line_error, run_cli


def test_every_cell_has_its_shipped_config_and_paper_value():
    from jaxmeta.papers import paper_values

    for name, table in reproduce.TABLES.items():
        paper = paper_values(table.paper_table) if table.paper_table else None
        for cell in table.cells:
            assert cell.config in shipped_configs(), (name, cell)
            if paper is not None:
                assert paper.value(table.agent_column, **cell.setting) is not None, (name, cell)


def test_quick_reproduce_runs_writes_the_table_and_resumes(tmp_path, capsys):
    args = ["reproduce", "rl2-bandits", "--cells", "n10-k5", "--quick", "--out", str(tmp_path), "--no-progress"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    root = tmp_path / "reproduce-rl2-bandits-quick"
    rows = json.loads((root / "table.json").read_text())
    assert [r["cell"] for r in rows] == ["n10-k5"]
    row = rows[0]
    assert row["paper"] == 6.7 and row["num_batches"] == 2 and row["verdict"].startswith("smoke test")
    assert 0.0 <= row["measured"] <= 10.0  # mean total reward of 10 Bernoulli pulls
    assert {"Random", "Gittins", "UCB1"} <= set(row["baselines"])
    assert (root / "n10-k5" / "final_table.json").exists()  # an ordinary run folder
    assert "n10-k5" in (root / "table.txt").read_text() and "paper" in out
    # a second invocation finds the cell done and trains nothing
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "done before" in out
    assert json.loads((root / "table.json").read_text()) == rows


def test_unknown_cell_is_one_line_naming_the_cells(tmp_path, capsys):
    code, _, err = run_cli(["reproduce", "rl2-mdps", "--cells", "n11", "--out", str(tmp_path)], capsys)
    line = one_line_error(err)
    assert code == 2 and "--cells" in line and "n11" in line and "n10" in line
