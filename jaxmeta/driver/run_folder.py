"""The run folder: what a run writes, written atomically, and read back.

    RUN/config.json           the run's settings, versions and devices
    RUN/metrics.jsonl         one JSON row per meta-iteration and seed
    RUN/returns.png           returns (and success rates) over meta-iterations
    RUN/adaptation.png        success rate (or return) after k adaptation steps, where
                              the final table gives curves (Meta-World)
    RUN/final_table.{txt,json}
    RUN/checkpoints/<it>/     orbax checkpoints (`jaxmeta.driver.checkpoint`)

JSON files are replaced atomically (written to a temporary file, then renamed), so a
killed process leaves either the old or the new file, never half of one. A running
process owns its folder (`RunFolder.own`, an exclusive lock on the folder that the OS
releases when the process dies, so a crashed owner never leaves it stuck); a second
process is refused with a `RunFolderError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmeta.driver import report

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RUN_FILES = (CONFIG, METRICS, "checkpoints")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]*$")


class RunFolderError(RuntimeError):
    """The run folder cannot be used: taken by another process, not writable, not a
    folder, full, or holding another run."""


def describe_os_error(e: OSError) -> str:
    """'no space left on device', 'permission denied', ... for an OSError."""
    if e.errno == errno.ENOSPC:
        return "no space left on device"
    return (e.strerror or str(e)).lower()


def check_name(name: str) -> None:
    """A run name is one folder name: letters, digits and . _ + = @ -, no separators."""
    if not NAME.match(name) or name in (".", "..") or len(name) > 200:
        raise RunFolderError(f"run name {name!r} must be one folder name (letters, digits, '.', '_', '-', '+', '=', "
                             f"'@'; no '/' or '..'), at most 200 characters")


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
    """root/name, or root/name-2, -3, ... if taken: an existing run is never overwritten
    (each name is claimed by an atomic mkdir, so two processes never share one)."""
    check_name(name)
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create the runs folder {root}: {_why_not_folder(root, e)}") from e
    i = 1
    while True:
        path = root / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            i += 1
        except OSError as e:
            raise RunFolderError(f"cannot create the run folder {path}: {describe_os_error(e)}") from e


def _why_not_folder(path: Path, e: OSError) -> str:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    return describe_os_error(e)


def _lock_holder(fd: int) -> str:
    """'pid N' of the process holding the lock on `fd`'s inode (Linux /proc/locks), or ''."""
    try:
        ino = os.fstat(fd).st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[5].split(":")[-1] == str(ino):
                return f" (pid {parts[4]})"
    except (OSError, IndexError):
        pass
    return ""


class RunFolder:
    """One run's folder. Only the primary process (`write=True`) writes to it."""

    def __init__(self, path: str | os.PathLike, write: bool = True):
        self.path = Path(path)
        self.write = write

    def has_run(self) -> bool:
        """True if a run already wrote here (config, metrics or checkpoints)."""
        return any((self.path / f).exists() for f in RUN_FILES)

    @contextlib.contextmanager
    def own(self):
        """Hold the folder for this process: an exclusive lock on the folder itself (no
        file is added), refused at once if another process holds it, released by the
        OS however this process ends."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise RunFolderError(f"cannot open the run folder {self.path}: {_why_not_folder(self.path, e)}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderError(
                    f"{self.path} is in use by another jaxmeta process{_lock_holder(fd)}: wait for it to finish, "
                    "or use another folder") from None
            yield self
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def check_writable(self) -> None:
        """Refuse a folder this process cannot write to, before anything runs."""
        targets = [self.path] + [self.path / f for f in RUN_FILES if (self.path / f).is_dir()]
        for folder in targets:
            try:
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as e:
                raise RunFolderError(f"cannot write to {folder}: {describe_os_error(e)}; make it writable, or "
                                     "copy the run elsewhere and resume the copy") from e
        for f in (CONFIG, METRICS):
            path = self.path / f
            if path.exists() and not os.access(path, os.W_OK):
                raise RunFolderError(f"cannot write to {path}: permission denied")
    def read_config(self) -> dict:
        return json.loads((self.path / CONFIG).read_text())

    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def begin(self, meta: dict, metrics: list[dict]) -> None:
        """Write config.json and metrics.jsonl as the run (re)starts from `metrics`."""
        if not self.write:
            return
        with self._writing(CONFIG):
            write_atomic(self.path / CONFIG, json.dumps(meta, indent=2))
        with self._writing(METRICS):
            write_atomic(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in metrics))

    def append_metrics(self, rows: list[dict]) -> None:
        """Append rows to metrics.jsonl (opened per call: nothing is held between them)."""
        if not self.write:
            return
        with self._writing(METRICS), open(self.path / METRICS, "a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))

    @contextlib.contextmanager
    def _writing(self, name: str):
        try:
            yield
        except OSError as e:
            raise RunFolderError(f"cannot write {self.path / name}: {describe_os_error(e)}") from e

    def finish(self, title: str, table: report.Table, per_seed: dict[str, report.Table] | None,
               metrics: list[dict], plot_title: str, curves: dict | None = None, score: str = "return") -> None:
        """The final table (text and JSON), the returns plot and, given `curves`
        ({label: AdaptationCurve}), the adaptation plot; `score` is what the curves and
        the plotted metrics measure (`AlgorithmSpec.score`)."""
        if not self.write:
            return
        header, rows = table
        text = report.format_table(header, rows)
        table_json: dict[str, Any] = {"header": header, "rows": to_jsonable(rows)}
        if per_seed:
            table_json["per_seed"] = {s: {"header": h, "rows": to_jsonable(r)} for s, (h, r) in per_seed.items()}
        with self._writing("final_table.txt"):
            write_atomic(self.path / "final_table.txt", title + "\n" + text + "\n")
            write_atomic(self.path / "final_table.json", json.dumps(table_json, indent=2))
            report.plot_returns(metrics, self.path / "returns.png", plot_title, score=score)
            if curves:
                metric = "success" if all(c.success is not None for c in curves.values()) else "returns"
                report.plot_adaptation(curves, self.path / "adaptation.png", metric=metric, title=plot_title,
                                       ylabel=report.curve_label(score))
