"""Finished benchmark units on disk: one JSON file each, written atomically, so a long run
never loses finished work and a half-written file is never read as finished."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def json_default(value):
    """JSON for the numpy scalars and arrays and the paths a benchmark's results hold (the one
    converter of results.json and the cached units); anything else is an error."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")



def load_unit(path: Path) -> dict | None:
    """The unit stored at ``path``, or None when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_unit(path: Path, unit: dict) -> None:
    """Write ``unit`` to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(unit, default=json_default))
    tmp.replace(path)
