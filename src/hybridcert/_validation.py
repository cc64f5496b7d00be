"""Argument checks shared by the public API: each error names the parameter and its range."""

from __future__ import annotations

import math

import numpy as np


def check_positive(name: str, value: float) -> float:
    value = _as_float(name, value)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_nonnegative(name: str, value: float) -> float:
    value = _as_float(name, value)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_count(name: str, value: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(name: str, value, *, open_low: bool = False, open_high: bool = False):
    """Check that every entry of ``value`` lies in [0, 1] (ends opened as asked)."""
    arr = np.asarray(value, dtype=float)
    low, high = ("(" if open_low else "["), (")" if open_high else "]")
    bad = np.isnan(arr) | (arr < 0) | (arr > 1)
    if open_low:
        bad |= arr == 0
    if open_high:
        bad |= arr == 1
    if bad.any():
        first = float(arr[bad].ravel()[0])
        raise ValueError(f"{name} must lie in {low}0, 1{high}, got {first!r}")
    return arr


def check_level(name: str, value) -> float:
    """A probability of error or a confidence level: a number in the open interval (0, 1)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    value = _as_float(name, value)
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return value


def check_alpha(alpha) -> float:
    """The probability of a wrong claim, in (0, 1): the one check of ``alpha`` everywhere."""
    return check_level("alpha", alpha)


def _as_float(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
