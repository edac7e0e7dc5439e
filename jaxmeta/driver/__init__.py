"""The driver: the only impure package (with `jaxmeta.cli` and `benchmarks/`).

    settings.py     RunSettings: one frozen, validated object per run
    loop.py         train / resume / evaluate / run: build, init or restore, iterate, finish
    run_folder.py   config.json, metrics.jsonl, final tables: atomic writes, read back
    report.py       tables and plots
    signals.py      Ctrl-C / SIGTERM as "checkpoint, then stop"
    checkpoint.py   orbax checkpoints of a whole run
    seeds.py        vmapped seeds and hyperparameter sweeps
    distributed.py  multi-process runs
"""
from jaxmeta.driver import settings
from jaxmeta.driver.checkpoint import CheckpointError
from jaxmeta.driver.evaluate import Evaluation, evaluate_run
from jaxmeta.driver.loop import (
    NonFiniteError, Program, RunResult, TrainingInterrupted, read_settings, resume, run, train,
)
from jaxmeta.driver.report import adaptation_table, aggregate_tables, format_table, plot_adaptation, plot_returns
from jaxmeta.driver.run_folder import RunFolder, RunFolderError, check_name, new_run_dir
from jaxmeta.driver.seeds import replace_unchecked, seed_keys, sweep
from jaxmeta.driver.settings import RunSettings

__all__ = [
    "CheckpointError", "Evaluation", "NonFiniteError", "Program", "RunFolder", "RunFolderError", "RunResult", "RunSettings",
    "TrainingInterrupted", "adaptation_table", "aggregate_tables", "check_name", "evaluate_run", "format_table",
    "new_run_dir", "settings",
    "plot_adaptation", "plot_returns", "read_settings", "replace_unchecked", "resume", "run", "seed_keys", "sweep",
    "train",
]
