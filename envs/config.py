"""Small validation helpers for scenario files: every error names the key and the file."""

from __future__ import annotations

import math
from typing import Any

_REQUIRED = object()


class ConfigError(ValueError):
    """A scenario (or workload, or trace) is malformed. The message says what and where."""


class Section:
    """A mapping read key by key; ``done()`` refuses any key that was never read.

    ``where`` is a human-readable location such as ``serving-small.yaml: workload``.
    """

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.where = where
        self._read: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED, *,
            low: float | None = None, high: float | None = None, choices: tuple | None = None) -> Any:
        self._read.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(f"{self.where}: missing required key '{key}'")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self.where}: key '{key}' must be {_names(kinds)}, got bool {value!r}")
        if value is None and type(None) in kinds:
            return None
        if not isinstance(value, kinds):
            raise ConfigError(
                f"{self.where}: key '{key}' must be {_names(kinds)}, got {type(value).__name__} {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{self.where}: key '{key}' is NaN")
            if low is not None and value < low:
                raise ConfigError(f"{self.where}: key '{key}' must be >= {low}, got {value!r}")
            if high is not None and value > high:
                raise ConfigError(f"{self.where}: key '{key}' must be <= {high}, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self.where}: key '{key}' must be one of {list(choices)}, got {value!r}")
        return value

    def section(self, key: str, default: Any = _REQUIRED) -> Section:
        value = self.get(key, dict, {} if default is not _REQUIRED else _REQUIRED)
        return Section(value, f"{self.where}.{key}")

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self._read]
        if unknown:
            raise ConfigError(f"{self.where}: unknown key '{unknown[0]}'"
                              + (f" (and {unknown[1:]})" if len(unknown) > 1 else ""))


def _names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             dict: "a mapping", list: "a list", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
