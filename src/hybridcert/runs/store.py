"""Resumable certification runs in an embedded SQLite store (standard library).

One row per input, written in its own transaction as soon as the input finishes; the
run's full configuration and the library version are stored beside the rows.  Re-opening
the store with the same configuration resumes (finished inputs are skipped); a different
configuration is refused unless a new run is asked for.  WAL journaling with
``synchronous=FULL`` makes every committed row survive a SIGKILL or power loss.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from hybridcert import __version__
from hybridcert.smoothing.core import Certification

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL,
    library_version TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    idx INTEGER NOT NULL,
    input_id TEXT NOT NULL,
    label INTEGER,
    predict INTEGER NOT NULL,
    p_lower REAL NOT NULL,
    p_upper REAL,
    max_tokens INTEGER NOT NULL,
    frontier TEXT NOT NULL,
    counts TEXT NOT NULL,
    samples INTEGER NOT NULL,
    time_s REAL NOT NULL,
    PRIMARY KEY (run_id, idx)
);
"""


class StoreMismatchError(ValueError):
    """The store holds a run with a different configuration."""


@dataclass
class StoredResult:
    idx: int
    input_id: str
    label: int | None
    predict: int
    p_lower: float
    p_upper: float | None
    max_tokens: int
    l2_radius: list[float]
    counts: list[int]
    samples: int
    time_s: float


class RunStore:
    """A run inside a SQLite file.

    Parameters
    ----------
    path : str or Path
        The database file (created if missing).
    config : dict
        The run's configuration (JSON-serialisable).  Compared with the stored one.
    new_run : bool
        Start a new run in this store even if its configuration differs from the last.
    """

    def __init__(self, path: str | Path, config: dict | None = None, new_run: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        last = self.db.execute(
            "SELECT run_id, config FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
        if config is None:
            if last is None:
                raise FileNotFoundError(f"no run stored in {self.path}")
            self.run_id, self.config = last[0], json.loads(last[1])
            return
        canonical = json.dumps(config, sort_keys=True)
        if last is not None and not new_run:
            if json.loads(last[1]) != json.loads(canonical):
                stored = json.loads(last[1])
                keys = sorted(k for k in set(stored) | set(config)
                              if stored.get(k) != config.get(k))
                raise StoreMismatchError(
                    f"store {self.path} belongs to another run (differs in {', '.join(keys)}); "
                    f"use another --store or pass --new-run")
            self.run_id, self.config = last[0], json.loads(last[1])
            return
        cursor = self.db.execute(
            "INSERT INTO runs (config, library_version, created) VALUES (?, ?, ?)",
            (canonical, __version__, time.time()))
        self.run_id, self.config = cursor.lastrowid, json.loads(canonical)

    def finished(self) -> set[int]:
        rows = self.db.execute("SELECT idx FROM results WHERE run_id = ?", (self.run_id,))
        return {r[0] for r in rows}

    def write(self, idx: int, input_id: str, label: int | None, result: Certification,
              samples: int) -> None:
        """Store one finished input, in its own committed transaction."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.run_id, idx, str(input_id), label, int(result.label),
                 float(result.p_lower), result.p_upper, int(result.max_tokens),
                 json.dumps(result.l2_radius), json.dumps([int(c) for c in result.counts]),
                 int(samples), float(result.time_s)))

    def results(self) -> list[StoredResult]:
        rows = self.db.execute(
            "SELECT idx, input_id, label, predict, p_lower, p_upper, max_tokens, frontier, "
            "counts, samples, time_s FROM results WHERE run_id = ? ORDER BY idx",
            (self.run_id,))
        return [StoredResult(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]),
                             json.loads(r[8]), r[9], r[10]) for r in rows]

    @property
    def library_version(self) -> str:
        return self.db.execute("SELECT library_version FROM runs WHERE run_id = ?",
                               (self.run_id,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()
