"""Building blocks shared by the synthetic workloads: size distributions, capability mixes
(explicit or Zipf popularity), categorical choices and priorities, each parsed from YAML with
errors that name the key and the file.

Size specifications accepted wherever a workload reads a ``size`` (or ``size2``):

* a positive number: constant size;
* ``[low, high]``: uniform integer in ``[low, high]`` (both ends included);
* a mapping with ``dist``:
  ``{dist: constant, value: 4}``, ``{dist: uniform, low: 1, high: 8}``,
  ``{dist: lognormal, mean: 800, cv: 1.5, min: 1, max: 4096, integer: true}``.
  A lognormal has the given mean and coefficient of variation *before* clipping to
  ``[min, max]``; integer sizes are rounded after clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.config import ConfigError, Section
from envs.workloads.assembly import categorical


@dataclass(frozen=True)
class SizeDist:
    """Size of one request: a constant, or a uniform integer in [low, high]."""

    low: float
    high: float

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2.0

    @property
    def constant(self) -> bool:
        """Whether every sample is the same value (``low``)."""
        return self.low == self.high

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.low == self.high:
            return np.full(n, self.low, dtype=float)
        return rng.integers(int(self.low), int(self.high) + 1, size=n).astype(float)

    @staticmethod
    def parse(value, where: str) -> SizeDist:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return SizeDist(float(value), float(value))
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value) \
                and value[0] <= value[1]:
            return SizeDist(float(value[0]), float(value[1]))
        raise ConfigError(f"{where}: a size is a positive number or [low, high] positive integers, got {value!r}")


@dataclass(frozen=True)
class LognormalSize:
    """Lognormal with the given (unclipped) ``mean`` and ``cv``, clipped to ``[low, high]`` and
    rounded to an integer if ``integer``."""

    mean_raw: float
    cv: float
    low: float
    high: float
    integer: bool = True

    constant = False
    """(Never treated as constant; see :attr:`SizeDist.constant`.)"""

    @property
    def sigma(self) -> float:
        return math.sqrt(math.log1p(self.cv ** 2))

    @property
    def mu(self) -> float:
        return math.log(self.mean_raw) - self.sigma ** 2 / 2.0

    @property
    def mean(self) -> float:
        """Mean after clipping (analytic; the effect of rounding is ignored)."""
        mu, s = self.mu, self.sigma
        if s == 0.0:
            return min(max(self.mean_raw, self.low), self.high)

        def cdf(x: float) -> float:
            if x <= 0.0:
                return 0.0
            if math.isinf(x):
                return 1.0
            return 0.5 * (1.0 + math.erf((math.log(x) - mu) / (s * math.sqrt(2.0))))

        def partial(x: float) -> float:  # E[X; X < x]
            if x <= 0.0:
                return 0.0
            if math.isinf(x):
                return self.mean_raw
            z = (math.log(x) - mu - s * s) / (s * math.sqrt(2.0))
            return self.mean_raw * 0.5 * (1.0 + math.erf(z))

        lo, hi = self.low, self.high
        inside = partial(hi) - partial(lo)
        below = lo * cdf(lo)
        above = 0.0 if math.isinf(hi) else hi * (1.0 - cdf(hi))
        # (clamped: rounding can put the sum just outside, e.g. 5.999999999999999 for low = high = 6)
        return min(max(below + inside + above, lo), hi)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.lognormal(self.mu, self.sigma, size=n)
        np.clip(x, self.low, self.high, out=x)
        if self.integer:
            np.rint(x, out=x)
            np.clip(x, math.ceil(self.low), math.floor(self.high) if math.isfinite(self.high) else None, out=x)
        return x


Size = SizeDist | LognormalSize


#: Keys of a size mapping, by ``dist``.
SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "constant": ("dist", "value"),
    "uniform": ("dist", "low", "high"),
    "lognormal": ("dist", "mean", "cv", "integer", "min", "max"),
}


#: Largest bound of a uniform integer size: integers above it are not exact as floats (and
#: drawing up to 2**63 or more overflows numpy's int64).
MAX_INT_SIZE = 2**53


def parse_size(value: Any, where: str, *, allow_zero: bool = False) -> Size:
    """A size specification (see the module docstring)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and (value > 0 or (allow_zero and value == 0)):
            return SizeDist(float(value), float(value))
    elif isinstance(value, list):
        if len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value) \
                and (value[0] > 0 or (allow_zero and value[0] == 0)) and value[0] <= value[1]:
            if value[1] > MAX_INT_SIZE:
                raise ConfigError(f"{where}: [low, high] must have high <= 2**53, got {value!r}")
            return SizeDist(float(value[0]), float(value[1]))
    elif isinstance(value, dict):
        sec = Section(value, where)
        if "dist" not in value:  # (a misspelt 'dist' is reported as unknown, not as missing)
            sec.expect(dict.fromkeys(k for keys in SIZE_KEYS.values() for k in keys))
        dist = sec.get("dist", str, choices=tuple(SIZE_KEYS))
        sec.expect(SIZE_KEYS[dist])
        low0 = 0.0 if allow_zero else 1e-12
        if dist == "constant":
            v = sec.get("value", float, low=low0)
            sec.done()
            return SizeDist(v, v)
        if dist == "uniform":
            lo = sec.get("low", int, low=0 if allow_zero else 1)
            hi = sec.get("high", int, low=lo, high=MAX_INT_SIZE)
            sec.done()
            return SizeDist(float(lo), float(hi))
        mean = sec.get("mean", float, low=1e-12)
        cv = sec.get("cv", float, low=0.0, high=100.0)
        integer = sec.get("integer", bool, True)
        lo = sec.get("min", float, 1.0, low=0.0 if allow_zero else 1e-12)
        hi = sec.get("max", float, math.inf, low=lo, allow_inf=True)
        if integer and math.isfinite(hi) and math.floor(hi) < math.ceil(lo):
            raise ConfigError(f"{where}: no integer in [min, max] = [{lo}, {hi}]")
        sec.done()
        return LognormalSize(mean, cv, lo, hi, integer)
    raise ConfigError(
        f"{where}: a size is a positive finite number, [low, high] integers, or a mapping with "
        f"'dist' (constant, uniform, lognormal), got {value!r}")


def parse_sizes(raw: Any, where: str, caps: list[str] | tuple[str, ...], default: Any = 1,
                *, allow_zero: bool = False) -> dict[str, Size]:
    """Per-capability sizes: one specification for all, or ``{capability: spec}`` (missing
    capabilities get ``default``). A mapping with a ``dist`` key is one specification."""
    if isinstance(raw, dict) and "dist" not in raw:
        for c in raw:
            if c not in caps:
                raise ConfigError(f"{where}: unknown capability '{c}' (expected one of {list(caps)})")
        return {c: parse_size(raw.get(c, default), f"{where}.{c}", allow_zero=allow_zero) for c in caps}
    spec = parse_size(raw, where, allow_zero=allow_zero)
    return {c: spec for c in caps}


def parse_mix(raw: Any, where: str, capabilities: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``{capability: weight}`` with non-negative weights and a positive total."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping {{capability: weight}}, got {raw!r}")
    mix = {}
    for c, w in raw.items():
        if c not in capabilities:
            raise ConfigError(f"{where}: capability '{c}' has no variant in the scenario (known: {list(capabilities)})")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or not math.isfinite(w):
            raise ConfigError(f"{where}: weight of '{c}' must be a non-negative number, got {w!r}")
        mix[c] = float(w)
    if not mix or sum(mix.values()) <= 0:
        raise ConfigError(f"{where}: needs at least one capability with a positive weight")
    return mix


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Normalised Zipf probabilities ``p_k ~ 1 / k^s`` for ranks k = 1..n."""
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** s
    return w / w.sum()


#: Keys of a ``popularity`` mapping.
POPULARITY_KEYS = ("zipf", "capabilities")


def parse_popularity(raw: Any, where: str, capabilities: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``{zipf: s, capabilities: [most popular, ...]}`` -> a mix. Without ``capabilities`` the
    ranking is the scenario's capability order."""
    sec = Section(raw, where, POPULARITY_KEYS)
    s = sec.get("zipf", float, low=0.0, high=10.0)
    ranked = sec.get("capabilities", list, None)
    sec.done()
    if ranked is None:
        ranked = list(capabilities)
    if not ranked:
        raise ConfigError(f"{where}.capabilities: needs at least one capability")
    for c in ranked:
        if c not in capabilities:
            raise ConfigError(f"{where}.capabilities: capability '{c}' has no variant in the scenario "
                              f"(known: {list(capabilities)})")
    if len(set(ranked)) != len(ranked):
        raise ConfigError(f"{where}.capabilities: a capability is listed twice")
    p = zipf_weights(len(ranked), s)
    return {c: float(pk) for c, pk in zip(ranked, p, strict=True)}


def mix_or_popularity(sec: Section, capabilities: tuple[str, ...] | list[str],
                      mix_key: str = "mix") -> dict[str, float]:
    """Exactly one of ``mix`` (explicit weights) and ``popularity`` (Zipf)."""
    has_mix, has_pop = sec.has(mix_key), sec.has("popularity")
    if has_mix == has_pop:
        raise ConfigError(f"{sec.where}: give exactly one of '{mix_key}' and 'popularity'")
    if has_mix:
        return parse_mix(sec.get(mix_key, dict), f"{sec.where}.{mix_key}", capabilities)
    return parse_popularity(sec.get("popularity", dict), f"{sec.where}.popularity", capabilities)


def parse_categorical(raw: Any, where: str, *, key_kind: type = float, low: float = 0.0,
                      high: float | None = None) -> dict:
    """``{value: probability}`` with finite numeric keys in ``[low, high]`` (YAML may give them
    as strings)."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a non-empty mapping {{value: probability}}, got {raw!r}")
    out = {}
    for k, p in raw.items():
        try:
            kv = key_kind(k)
            if key_kind is int and float(k) != kv:
                raise ValueError(k)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: key {k!r} must be {'an integer' if key_kind is int else 'a number'}") from None
        if not math.isfinite(kv):
            raise ConfigError(f"{where}: key {k!r} must be finite")
        if kv < low:
            raise ConfigError(f"{where}: key {k!r} must be >= {low}")
        if high is not None and kv > high:
            raise ConfigError(f"{where}: key {k!r} must be <= {high}")
        if not isinstance(p, (int, float)) or isinstance(p, bool) or p < 0 or not math.isfinite(p):
            raise ConfigError(f"{where}: probability of {k!r} must be a non-negative number, got {p!r}")
        out[kv] = float(p)
    if sum(out.values()) <= 0:
        raise ConfigError(f"{where}: probabilities sum to 0")
    return out


def parse_priorities(sec: Section) -> dict[float, float] | None:
    raw = sec.get("priorities", dict, None)
    if raw is None:
        return None
    return parse_categorical(raw, f"{sec.where}.priorities", low=0.0)


def draw_categorical(rng: np.random.Generator, table: dict, n: int) -> np.ndarray:
    """``n`` draws of the keys of ``{value: probability}`` (as a float array)."""
    vals = np.array(list(table), dtype=float)
    p = np.array(list(table.values()), dtype=float)
    return vals[categorical(rng, p / p.sum(), n)]  # == rng.choice(len(vals), size=n, p=p / p.sum())
