"""Typed values from a decoded TOML dict, each mistake a `UserError` naming the file and key.

    >>> reader = TomlReader(Path("studies/grid.toml"))
    >>> reader.integer({"batch": 0}, "batch", 375, low=1, where="grid")
    UserError: studies/grid.toml: grid.batch: must be an integer >= 1, got 0

`hpstudy.config.studyfile.StudyFileParser` builds on it: this module owns how a value is read and
refused, that one what a study file's keys mean.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path

from hpstudy.errors import UserError


class TomlReader:
    """Reads tables, integers, numbers, strings and choices out of one file's raw dict."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> UserError:
        return UserError(f"{self.path}: {key}: {message}")

    def table(self, raw: dict, key: str, allowed: set[str]) -> dict:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {value!r}")
        self.no_unknown(value, allowed, key)
        return value

    def no_unknown(self, raw: dict, allowed: set[str], where: str = "") -> None:
        unknown = sorted(set(raw) - allowed)
        if unknown:
            prefix = f"{where}." if where else ""
            raise self.fail(
                f"{prefix}{unknown[0]}",
                f"unknown key; allowed keys here: {', '.join(sorted(allowed))}",
            )

    def integer(self, raw: dict, key: str, default: int, *, low: int, where: str = "") -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            name = f"{where}.{key}" if where else key
            raise self.fail(name, f"must be an integer >= {low}, got {value!r}")
        return value

    def number(
        self, raw: dict, key: str, where: str, *, positive: bool = False, default=None
    ) -> float:
        value = raw.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or (positive and value <= 0):
            need = "a positive number" if positive else "a finite number"
            raise self.fail(f"{where}.{key}", f"must be {need}, got {value!r}")
        return float(value)

    def string(self, raw: dict, key: str, default: str | None = None) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def choice(self, raw: dict, key: str, enum_type: type[enum.Enum], default: str | None = None):
        value = raw.get(key, default)
        try:
            return enum_type(value)
        except ValueError:
            options = ", ".join(repr(m.value) for m in enum_type)
            raise self.fail(key, f"must be one of {options}, got {value!r}") from None
