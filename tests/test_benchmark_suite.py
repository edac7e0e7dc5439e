"""benchmarks/run.py's summary table: every timed line is a row, summary lines are not."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def _run_module():
    spec = importlib.util.spec_from_file_location("benchmark_suite_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_table_has_a_row_per_timed_line_and_skips_summaries():
    run = _run_module()
    records = [
        {"benchmark": "maml_locomotion", "simulator": "brax", "env_steps_per_s": 63445.6, "s_per_meta_iteration": 5.04,
         "compile_s": 37.0, "peak_device_mb": 806.1, "device": "NVIDIA H200", "jax": "0.11.2"},
        # maml_locomotion's summary: env_steps_per_s is a dict per path (formatting it used to raise)
        {"benchmark": "maml_locomotion_summary", "env_steps_per_s": {"brax:generalized": 63445.6}},
        {"benchmark": "seeds_vmap", "algorithm": "rl2_bandit", "ratio": 1.7},
        {"benchmark": "rl2_bandit", "model": "gru64", "env_steps_per_s": 8964503.0, "train_step_s_median": 0.0228,
         "compile_s": 6.2, "peak_rss_mb": 1397.7, "device": "cuda:0", "jax": "0.11.2"},
    ]
    lines = run.speed_table(records).splitlines()
    assert len(lines) == 2 + 2  # header, rule, two measurements
    assert lines[2].startswith("| maml_locomotion (brax) | halfcheetah_vel | 63,446 | 5.0400 | 37.0 | 806 (device)")
    assert lines[3].startswith("| rl2_bandit (gru64) | bandit | 8,964,503 | 0.0228 | 6.2 | 1,398 (RSS)")


def _curves_module():
    path = SCRIPT.parent / "locomotion_curves.py"
    spec = importlib.util.spec_from_file_location("benchmark_locomotion_curves", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_locomotion_curves_count_steps_and_average_windows(tmp_path, capsys):
    """Env steps are tasks x episodes x horizon x (inner steps + 1) per meta-iteration;
    each point is the mean of the last `window` meta-iterations up to that step count."""
    import json

    from jaxmeta.algorithms.maml import MAMLConfig
    from jaxmeta.driver.settings import RunSettings

    curves = _curves_module()
    config = MAMLConfig(meta_batch_size=4, num_episodes=3, num_inner_steps=2)
    settings = RunSettings(algorithm="maml", env="halfcheetah_dir", env_kwargs={"horizon": 50}, config=config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(settings.to_json()))
    rows = [{"iteration": i, "seed": 0, "pre_return": float(i), "post_return": 10.0 * i, "wall_s": 2.0 * i}
            for i in range(1, 7)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_it = 4 * 3 * 50 * 3
    assert curves.main([f"{run}:A", "--every", str(2 * per_it), "--window", "2"]) == 0
    points = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["iteration"] for p in points] == [2, 4, 6]
    assert [p["env_steps"] for p in points] == [2 * per_it, 4 * per_it, 6 * per_it]
    assert [p["post_return"] for p in points] == [15.0, 35.0, 55.0]  # means of (10, 20), (30, 40), (50, 60)
    assert [p["pre_return"] for p in points] == [1.5, 3.5, 5.5]
    assert points[-1]["wall_s"] == 12.0 and points[0]["run"] == "A"
    # two seeds: each meta-iteration is their mean
    two = [{**r, "seed": s, "post_return": r["post_return"] + 2 * s} for r in rows for s in (0, 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in two))
    assert curves.main([str(run), "--every", str(6 * per_it), "--window", "1"]) == 0
    (point,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (point["iteration"], point["post_return"], point["pre_return"]) == (6, 61.0, 6.0)
    assert curves.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and len(err.strip().splitlines()) == 1
