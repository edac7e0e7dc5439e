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
