"""The run folder: what a run writes, written atomically, and read back.

    RUN/config.json           the run's settings, versions and devices
    RUN/metrics.jsonl         one JSON row per meta-iteration and seed
    RUN/returns.png           returns (and success rates) over meta-iterations
    RUN/adaptation.png        success rate (or return) after k adaptation steps, where
                              the final table gives curves (Meta-World)
    RUN/final_table.{txt,json}
    RUN/checkpoints/<it>/     orbax checkpoints (`jaxmeta.driver.checkpoint`)

JSON files are replaced atomically (written to a temporary file, then renamed), so a
killed process leaves either the old or the new file, never half of one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np

from jaxmeta.driver import report

CONFIG = "config.json"
METRICS = "metrics.jsonl"


def to_jsonable(value):
    """Dataclasses, tuples, arrays and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.generic, jax.Array, np.ndarray)):
        return np.asarray(value).tolist()
    return value


def canonical(value):
    """The JSON form of a value (tuples as lists), for comparing with saved metadata."""
    return json.loads(json.dumps(to_jsonable(value)))


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` in one rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """root/name, or root/name-2, -3, ... if taken: an existing run is never overwritten."""
    root = Path(root)
    path, i = root / name, 1
    while path.exists():
        i += 1
        path = root / f"{name}-{i}"
    path.mkdir(parents=True)
    return path


class RunFolder:
    """One run's folder. Only the primary process (`write=True`) writes to it."""

    def __init__(self, path: str | os.PathLike, write: bool = True):
        self.path = Path(path)
        self.write = write

    def read_config(self) -> dict:
        return json.loads((self.path / CONFIG).read_text())

    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def begin(self, meta: dict, metrics: list[dict]) -> None:
        """Write config.json and metrics.jsonl as the run (re)starts from `metrics`."""
        if not self.write:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / CONFIG, json.dumps(meta, indent=2))
        write_atomic(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in metrics))

    @contextlib.contextmanager
    def metrics_appender(self) -> Iterator:
        """A function that appends rows to metrics.jsonl, flushed after each call."""
        if not self.write:
            yield lambda rows: None
            return
        with open(self.path / METRICS, "a") as fh:
            def append(rows: list[dict]) -> None:
                fh.write("".join(json.dumps(r) + "\n" for r in rows))
                fh.flush()

            yield append

    def finish(self, title: str, table: report.Table, per_seed: dict[str, report.Table] | None,
               metrics: list[dict], plot_title: str, curves: dict | None = None) -> None:
        """The final table (text and JSON), the returns plot and, given `curves`
        ({label: AdaptationCurve}), the adaptation plot."""
        if not self.write:
            return
        header, rows = table
        text = report.format_table(header, rows)
        write_atomic(self.path / "final_table.txt", title + "\n" + text + "\n")
        table_json: dict[str, Any] = {"header": header, "rows": to_jsonable(rows)}
        if per_seed:
            table_json["per_seed"] = {s: {"header": h, "rows": to_jsonable(r)} for s, (h, r) in per_seed.items()}
        write_atomic(self.path / "final_table.json", json.dumps(table_json, indent=2))
        report.plot_returns(metrics, self.path / "returns.png", plot_title)
        if curves:
            metric = "success" if all(c.success is not None for c in curves.values()) else "returns"
            report.plot_adaptation(curves, self.path / "adaptation.png", metric=metric, title=plot_title)
