"""The audit log: one SQLite row per decision, nothing of the input but its hash.

Rows are written by one background thread (a request never waits on the disk); ``close``
writes what is queued.  Columns: ``time`` (UTC, ISO 8601), ``input_hash`` (SHA-256, see
docs/SERVICE.md), ``seed`` (the noise seed: with the service's seed key the decision can be
reproduced from the input), ``decision``, ``label``, ``targets`` (JSON: each target region
and whether it is certified), ``region`` (JSON rows of the certified region), ``p_lower``,
``p_upper``, ``queries``, ``alpha``, ``model`` (name and weights hash) and ``config_hash``.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    decision TEXT NOT NULL,
    label INTEGER NOT NULL,
    targets TEXT NOT NULL,
    region TEXT NOT NULL,
    p_lower REAL,
    p_upper REAL,
    queries INTEGER NOT NULL,
    alpha REAL NOT NULL,
    model TEXT NOT NULL,
    config_hash TEXT NOT NULL
)
"""
COLUMNS = ("time", "input_hash", "seed", "decision", "label", "targets", "region", "p_lower",
           "p_upper", "queries", "alpha", "model", "config_hash")


class AuditLog:
    """Append-only SQLite log of decisions.

    Parameters
    ----------
    path : str or Path
        The database file (created with its table if absent; an existing file must hold
        this table or none).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise ValueError(f"--audit-log {self.path} is not a file")
        try:
            connection = sqlite3.connect(self.path, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(SCHEMA)
            found = [row[1] for row in connection.execute("PRAGMA table_info(decisions)")]
        except sqlite3.DatabaseError as err:
            raise ValueError(f"--audit-log {self.path} is not a usable SQLite file ({err})") \
                from None
        missing = [c for c in COLUMNS if c not in found]
        if missing:
            connection.close()
            raise ValueError(f"--audit-log {self.path} holds a foreign 'decisions' table "
                             f"(missing columns {missing})")
        self._connection = connection
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="hybridcert-audit",
                                        daemon=True)
        self._thread.start()
        self.written = 0

    def record(self, *, input_hash: str, seed: int, decision: str, label: int,
               targets: list, region: list, p_lower: float | None, p_upper: float | None,
               queries: int, alpha: float, model: str, config_hash: str) -> None:
        """Queue one decision (returns at once)."""
        when = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._queue.put((when, input_hash, int(seed), decision, int(label),
                         json.dumps(targets), json.dumps(region), p_lower, p_upper,
                         int(queries), float(alpha), model, config_hash))

    def _write_loop(self) -> None:
        insert = (f"INSERT INTO decisions ({', '.join(COLUMNS)}) VALUES "
                  f"({', '.join('?' for _ in COLUMNS)})")
        while True:
            rows = [self._queue.get()]
            while True:
                try:
                    rows.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in rows
            rows = [r for r in rows if r is not None]
            if rows:
                with self._connection:
                    self._connection.executemany(insert, rows)
                self.written += len(rows)
            if stop:
                return

    def close(self) -> None:
        """Write what is queued and close the file."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._connection.close()
