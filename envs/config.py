"""Small validation helpers for scenario files: every error names the key and the file.

A :class:`Section` is one mapping of a scenario (the top level, a device, a variant, the
workload...). It knows the keys it accepts (``keys=`` or :meth:`Section.expect`), so that a
misspelled key is reported as unknown, with the closest known key, before any missing
required key; :meth:`Section.get` reads and checks one key (type, NaN, infinity, bounds,
choices). YAML files are read with :func:`load_yaml`, which refuses duplicate keys.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

_REQUIRED = object()


class ConfigError(ValueError):
    """A scenario (or workload, or trace) is malformed. The message says what and where."""


class ScenarioWarning(UserWarning):
    """A scenario loads but part of it can never be used (e.g. a device type no variant runs on)."""


def did_you_mean(key: Any, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known key closest to ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Section:
    """A mapping read key by key.

    ``where`` is a human-readable location such as ``serving-small.yaml: workload``. ``keys``
    (or a later :meth:`expect`) declares every key the section accepts: any other key is refused
    at once, with a suggestion, so that a typo is not reported as a missing required key.
    ``done()`` refuses any key that was never read. ``origins`` maps keys that did not come from
    the file (e.g. ``gym.make`` keywords) to the location to blame for them.
    """

    def __init__(self, data: Any, where: str, keys: Iterable[str] | None = None, *,
                 origins: Mapping[str, str] | None = None):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.where = where
        self.origins: dict[str, str] = dict(origins or {})
        self._read: set[str] = set()
        self._known: tuple[str, ...] | None = None
        if keys is not None:
            self.expect(keys)

    def expect(self, keys: Iterable[str]) -> Section:
        """Declare the keys this section accepts (added to those declared before) and refuse
        any other key now, naming the closest known one."""
        self._known = (self._known or ()) + tuple(k for k in keys if k not in (self._known or ()))
        unknown = [k for k in self.data if k not in self._known]
        if unknown:
            raise ConfigError(self._unknown_message(unknown, self._known))
        return self

    @property
    def known_keys(self) -> tuple[str, ...] | None:
        return self._known

    def loc(self, key: str) -> str:
        """Where ``key`` came from: the section's location, or the keyword that set it."""
        return self.origins.get(key, self.where)

    def _unknown_message(self, unknown: list, known: Iterable[str]) -> str:
        first = unknown[0]
        known = list(known)
        if first in self.origins:
            msg = f"{self.origins[first]}: unknown key{did_you_mean(first, known)}"
        else:
            msg = f"{self.where}: unknown key {first!r}{did_you_mean(first, known)}"
        if len(unknown) > 1:
            msg += f" (other unknown keys: {unknown[1:]})"
        return msg

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED, *,
            low: float | None = None, high: float | None = None, gt: float | None = None,
            choices: tuple | None = None, allow_inf: bool = False) -> Any:
        """The value of ``key`` (``default`` if absent; required without one), checked: of type
        ``kind`` (an int is accepted as a float, a bool never as a number), not NaN, finite
        unless ``allow_inf``, ``>= low``, ``> gt``, ``<= high``, one of ``choices``."""
        if self._known is not None and key not in self._known:
            raise AssertionError(f"{self.where}: reading key '{key}' that the section does not declare")
        self._read.add(key)
        where = self.loc(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(f"{where}: missing required key '{key}'")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{where}: key '{key}' must be {_names(kinds)}, got bool {value!r}")
        if value is None and type(None) in kinds:
            return None
        if not isinstance(value, kinds):
            raise ConfigError(
                f"{where}: key '{key}' must be {_names(kinds)}, got {type(value).__name__} {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(f"{where}: key '{key}' is NaN")
            if isinstance(value, float) and math.isinf(value) and not allow_inf:
                raise ConfigError(f"{where}: key '{key}' must be finite, got {value!r}")
            if low is not None and value < low:
                raise ConfigError(f"{where}: key '{key}' must be >= {low}, got {value!r}")
            if gt is not None and not value > gt:
                raise ConfigError(f"{where}: key '{key}' must be > {gt}, got {value!r}")
            if high is not None and value > high:
                raise ConfigError(f"{where}: key '{key}' must be <= {high}, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{where}: key '{key}' must be one of {list(choices)}, got {value!r}"
                              + (did_you_mean(value, choices) if isinstance(value, str) else ""))
        return value

    def section(self, key: str, default: Any = _REQUIRED, keys: Iterable[str] | None = None, *,
                origins: Mapping[str, str] | None = None) -> Section:
        """The mapping under ``key`` as a Section (``{}`` if absent and ``default`` given)."""
        value = self.get(key, dict, {} if default is not _REQUIRED else _REQUIRED)
        return Section(value, f"{self.where}.{key}", keys, origins=origins)

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self._read]
        if unknown:
            raise ConfigError(self._unknown_message(unknown, self._known or sorted(self._read)))


def _names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             dict: "a mapping", list: "a list", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# ---------------------------------------------------------------------- YAML
class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (at any depth),
    naming the file and both lines: YAML itself keeps the last value silently."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # the mapping's own keys ('<<' merge keys may be overridden)
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: let the base constructor report it
            break
        line = key_node.start_mark.line + 1
        if first is not None:
            raise ConfigError(f"{key_node.start_mark.name}:{line}: duplicate key {key!r} "
                              f"(first given on line {first})")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with :class:`UniqueKeyLoader`; malformed YAML and duplicate keys raise
    :class:`ConfigError` naming the file (and the line)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            loader = UniqueKeyLoader(f)
            loader.name = str(path)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
