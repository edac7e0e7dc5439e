"""Published results that jaxmeta reproduces, read from the package data file
`jaxmeta/data/papers.toml` (one table per paper table, every table with its source).

    >>> t = paper_values("rl2_bandits")
    >>> t.value("Gittins", n=100, k=5)
    78.3
"""
from __future__ import annotations

import re
from importlib import resources
from typing import Any, NamedTuple

from jaxmeta.config import ConfigError

_META = ("paper", "source", "metric", "verified", "columns")


class PaperTable(NamedTuple):
    """One published table: its citation, where it is in the paper, and its rows.

    `rows` are dicts holding the setting (e.g. n, k), `corroborated` (cells quoted with
    the same number elsewhere) and one float per known cell, keyed by the column's name
    as printed in the paper ("eps-Greedy", "RL^2").
    """

    name: str
    paper: str
    source: str
    metric: str
    verified: str
    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    def row(self, **setting) -> dict[str, Any]:
        """The row whose setting matches, e.g. `row(n=100, k=5)`; ConfigError if none does."""
        for r in self.rows:
            if all(r.get(k) == v for k, v in setting.items()):
                return r
        known = [{k: v for k, v in r.items() if k not in self.columns and k != "corroborated"} for r in self.rows]
        raise ConfigError(f"{self.name} has no row {setting}; rows: {known}", next(iter(setting), "setting"))

    def value(self, column: str, **setting) -> float | None:
        """The published cell, or None where the paper's value is not recorded."""
        if column not in self.columns:
            raise ConfigError(f"{self.name} has no column {column!r}; columns: {', '.join(self.columns)}", "column")
        return self.row(**setting).get(column)


def _key(column: str) -> str:
    """A column's TOML key: "eps-Greedy" -> eps_Greedy, "RL^2" -> RL2."""
    return re.sub(r"[^0-9A-Za-z]", "_", column.replace("^", ""))


def _load() -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(resources.files("jaxmeta").joinpath("data/papers.toml").read_text())


def paper_tables() -> tuple[str, ...]:
    """The names of the tables in the data file."""
    return tuple(_load())


def paper_values(table: str) -> PaperTable:
    """The published table `table` (one of `paper_tables()`), e.g. "rl2_bandits" (RL^2 Table 1),
    "rl2_mdps" (RL^2 Table 2), "snail_bandits" (SNAIL Table 3)."""
    data = _load()
    if table not in data:
        raise ConfigError(f"unknown paper table {table!r}; known: {', '.join(data)}", "table")
    t = data[table]
    columns = tuple(t["columns"])
    keys = {_key(c): c for c in columns}
    rows = []
    for raw in t.get("rows", []):
        rows.append({keys.get(k, k): (float(v) if k in keys else v) for k, v in raw.items()})
    return PaperTable(table, *(t[m] for m in _META[:-1]), columns, tuple(rows))
