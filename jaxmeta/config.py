"""Validation helpers for frozen config dataclasses.

Every config calls these from `__post_init__`, so a bad value fails at construction
with one line that names the field and its allowed range.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Iterable, Sequence

import numpy as np


class ConfigError(ValueError):
    """A config field holds a value outside its allowed range.

    `field` names the offending field, so the command line can name its flag.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    """A real number: Python's or numpy's (np.float32(0.1) is as good as 0.1)."""
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Require an integer (Python's or numpy's) in [low, high] (high=None means unbounded)."""
    ok = _is_int(value)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        upper = "inf" if high is None else str(high)
        raise ConfigError(f"{name} must be an integer in [{low}, {upper}], got {value!r}", name)


def check_float(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Require a finite-or-bounded real number in the given interval."""
    ok = _is_number(value) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        raise ConfigError(f"{name} must be a number in {lb}{low}, {high}{rb}, got {value!r}", name)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}", name)


def check_bool(name: str, value: Any) -> None:
    if not _is_bool(value):
        raise ConfigError(f"{name} must be True or False, got {value!r}", name)


def check_sizes(name: str, value: Any, low: int = 1, high: int = 4096) -> None:
    """Require a non-empty tuple of integer layer sizes."""
    ok = isinstance(value, tuple) and len(value) > 0 and all(_is_int(v) and low <= v <= high for v in value)
    if not ok:
        raise ConfigError(
            f"{name} must be a non-empty tuple of integers in [{low}, {high}], got {value!r}", name
        )


def check_trpo_fields(config) -> None:
    """TRPO's settings on a config that has them (MAML-TRPO's and the black-box learners'
    outer step): max_kl, cg_iters, cg_damping, ls_max_steps, ls_backtrack_ratio, cg_subsample."""
    check_float("max_kl", config.max_kl, 0.0, 1e3, low_open=True)
    check_int("cg_iters", config.cg_iters, 1, 1000)
    check_float("cg_damping", config.cg_damping, 0.0, 1e3)
    check_int("ls_max_steps", config.ls_max_steps, 1, 1000)
    check_float("ls_backtrack_ratio", config.ls_backtrack_ratio, 0.0, 1.0, low_open=True, high_open=True)
    check_float("cg_subsample", config.cg_subsample, 0.0, 1.0, low_open=True)


def check_outer_fields(config, outer: str, outer_fields: dict[str, Sequence[str]]) -> None:
    """Fields that only another outer step reads must stay at their dataclass defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for other, names in outer_fields.items():
        for name in names:
            if name not in outer_fields[outer] and getattr(config, name) != defaults[name]:
                raise ConfigError(
                    f"{name} is a setting of outer={other!r}; outer={outer!r} does not use it "
                    f"(leave it at {defaults[name]!r} or choose outer={other!r})", name)
