"""Resumable certification runs in an embedded SQLite store (standard library).

One row per input, written in its own committed transaction as soon as the input finishes;
the run's full configuration and the library version are stored beside the rows.  Inputs are
keyed by their id **and a hash of their content**, so a resumed run skips exactly the inputs
whose stored result still belongs to them.  Re-opening the store with the same configuration
resumes; a different configuration is refused unless a new run is asked for.

Safety: WAL journaling with ``synchronous=FULL`` (every committed row survives a SIGKILL or a
power loss); a file that is not a hybridcert store (random bytes, a truncated database,
another application's tables, a directory) is refused before anything is written; the check
for an existing run and the creation of a new one are one transaction, and concurrent
writers wait on SQLite's lock (up to ``timeout`` seconds) instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from hybridcert import __version__

#: Marks a SQLite file as a hybridcert store (``PRAGMA application_id``): "HYBC".
APPLICATION_ID = 0x48594243
#: 3: rows say how each decision ended (``status`` and ``decided_at``, per target and for the
#: class; the class's status also as a column).  2: before.
SCHEMA_VERSION = 3
_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL,
    digest TEXT NOT NULL,
    library_version TEXT NOT NULL,
    created REAL NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    input_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    idx INTEGER NOT NULL,
    label INTEGER,
    predict INTEGER NOT NULL,
    status TEXT,
    row TEXT NOT NULL,
    written REAL NOT NULL,
    PRIMARY KEY (run_id, input_id)
);
CREATE TABLE IF NOT EXISTS attacks (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    input_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    factor REAL NOT NULL,
    row TEXT NOT NULL,
    written REAL NOT NULL,
    PRIMARY KEY (run_id, input_id, kind, factor)
);
"""
#: ``hybridcert attack`` results; stores created before it get the table on their first
#: attack (an added table: older readers ignore it, so the schema version is unchanged).
_ATTACKS = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS attacks"):].strip().rstrip(";")


class StoreError(ValueError):
    """The store cannot be used; the message says why in one line."""


class StoreMismatchError(StoreError):
    """The store holds a run with a different configuration."""


class RunStore:
    """A run inside a SQLite file.

    Parameters
    ----------
    path : str or Path
        The database file (created if missing, unless ``readonly``).
    config : dict, optional
        The run's configuration (JSON-serialisable), compared with the stored one.  None:
        open the store's last run (for reports).
    new_run : bool
        Start a new run in this store even if its configuration differs from the last.
    readonly : bool
        Open for reading only (reports); works in read-only folders.
    timeout : float
        Seconds to wait for another process's lock before giving up.
    details : dict, optional
        What the configuration resolved to (the model's blocks, vocabulary sizes, ...), stored
        with a new run for reports; not compared when resuming.
    run_id : int, optional
        Reports: open this run instead of the last one.
    """

    def __init__(self, path: str | Path, config: dict | None = None, new_run: bool = False,
                 readonly: bool = False, timeout: float = 60.0, details: dict | None = None,
                 run_id: int | None = None):
        self.path = Path(path)
        self.readonly = readonly
        self.timeout = timeout
        self._details = json.dumps(details or {}, sort_keys=True, allow_nan=False)
        self._wanted_run = run_id
        self.db = _connect(self.path, readonly, timeout)
        try:
            self._open(config, new_run)
        except BaseException:
            self.db.close()
            raise

    def _open(self, config: dict | None, new_run: bool) -> None:
        if config is None:
            if not self._has_schema():
                raise StoreError(f"no run stored in {self.path}")
            if self._wanted_run is None:
                last = self._query("SELECT run_id, config FROM runs ORDER BY run_id DESC "
                                   "LIMIT 1", ()).fetchone()
            else:
                last = self._query("SELECT run_id, config FROM runs WHERE run_id = ?",
                                   (int(self._wanted_run),)).fetchone()
                if last is None:
                    runs = [r[0] for r in self._query("SELECT run_id FROM runs", ())]
                    raise StoreError(f"store {self.path} has no run {self._wanted_run} "
                                     f"(runs: {runs})")
            if last is None:
                raise StoreError(f"no run stored in {self.path}")
            self.run_id, self.config = last[0], json.loads(last[1])
            return
        canonical = json.dumps(config, sort_keys=True, allow_nan=False)
        self._has_schema()                  # refuse a foreign file before writing anything
        self._retry_locked(self._use_wal)
        self._retry_locked(lambda: self._check_and_create(config, canonical, new_run))

    def _check_and_create(self, config: dict, canonical: str, new_run: bool) -> None:
        """One transaction: create the schema if new, then resume the last run or start one."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            if not self._has_schema():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            last = self.db.execute(
                "SELECT run_id, config FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
            if last is not None and not new_run:
                stored = json.loads(last[1])
                if stored != json.loads(canonical):
                    keys = sorted(k for k in set(stored) | set(config)
                                  if stored.get(k) != config.get(k))
                    raise StoreMismatchError(
                        f"store {self.path} belongs to another run (differs in "
                        f"{', '.join(keys)}); use another --store or pass --new-run")
                self.run_id, self.config = last[0], stored
            else:
                cursor = self.db.execute(
                    "INSERT INTO runs (config, digest, library_version, created, details) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (canonical, hashlib.sha256(canonical.encode()).hexdigest(), __version__,
                     time.time(), self._details))
                self.run_id, self.config = cursor.lastrowid, json.loads(canonical)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def _use_wal(self) -> None:
        if self.db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self.db.execute("PRAGMA journal_mode=WAL").fetchone()
        self.db.execute("PRAGMA synchronous=FULL")

    def _retry_locked(self, action) -> None:
        """Run ``action``, waiting out another process's lock (SQLite does not apply its busy
        timeout to every lock upgrade, e.g. switching the journal mode)."""
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            try:
                return action()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise StoreError(_describe(self.path, err)) from None
                if time.monotonic() > deadline:
                    raise StoreError(f"store {self.path} stayed locked by another process "
                                     f"for {self.timeout:.0f} s") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except sqlite3.DatabaseError as err:
                raise StoreError(_describe(self.path, err)) from None

    def _has_schema(self) -> bool:
        """True for a hybridcert store, False for an empty database; raises otherwise."""
        # One snapshot: read one at a time, another process's schema commit could fall between
        # the tables and the header ("has schema 2, this hybridcert reads schema 2").
        own = not self.db.in_transaction
        if own:
            self._query("BEGIN", ())
        try:
            tables = {r[0] for r in self._query(
                "SELECT name FROM sqlite_master WHERE type = 'table'", ())}
            app = self._query("PRAGMA application_id", ()).fetchone()[0]
            version = self._query("PRAGMA user_version", ()).fetchone()[0]
        finally:
            if own and self.db.in_transaction:
                self.db.execute("COMMIT")
        if not tables and app == 0:
            if self.readonly:
                raise StoreError(f"no run stored in {self.path}")
            return False
        if app != APPLICATION_ID:
            if {"runs", "results"} <= tables:
                raise StoreError(f"store {self.path} was written by an older hybridcert "
                                 f"(before schema {SCHEMA_VERSION}); use a new --store")
            raise StoreError(f"{self.path} is a SQLite database of another application "
                             f"(tables {sorted(tables)}), not a hybridcert store")
        if 0 < version < SCHEMA_VERSION and {"runs", "results"} <= tables:
            raise StoreError(f"store {self.path} was written by an older hybridcert (schema "
                             f"{version}: its rows do not say how each decision ended); this "
                             f"hybridcert reads schema {SCHEMA_VERSION}: use a new --store")
        if version != SCHEMA_VERSION or not {"runs", "results"} <= tables:
            raise StoreError(f"store {self.path} has schema {version}, this hybridcert reads "
                             f"schema {SCHEMA_VERSION}")
        return True

    def _query(self, sql: str, args: tuple):
        try:
            return self.db.execute(sql, args)
        except sqlite3.DatabaseError as err:
            raise StoreError(_describe(self.path, err)) from None

    # -- rows -------------------------------------------------------------------------------
    def finished(self) -> dict[str, str]:
        """Stored inputs of this run: ``{input id: content hash}``."""
        rows = self._query("SELECT input_id, content_hash FROM results WHERE run_id = ?",
                           (self.run_id,))
        return dict(rows.fetchall())

    def write(self, row: dict, content_hash: str, replace: bool = False) -> bool:
        """Store one finished input (a :func:`~hybridcert.smoothing.result_row` dict), in its
        own committed transaction.  Returns False when another process stored it first
        (``replace`` overwrites: for inputs whose content changed)."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        payload = json.dumps(row, allow_nan=False)
        for attempt in range(5):
            try:
                with self.db:
                    cursor = self.db.execute(
                        f"{verb} INTO results (run_id, input_id, content_hash, idx, label, "
                        f"predict, status, row, written) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self.run_id, str(row["id"]), content_hash, int(row["idx"]),
                         row["label"], int(row["predict"]), row.get("status"), payload,
                         time.time()))
                return cursor.rowcount > 0
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 4:
                    raise StoreError(_describe(self.path, err)) from None
                time.sleep(0.5 * (attempt + 1))
            except sqlite3.DatabaseError as err:
                raise StoreError(_describe(self.path, err)) from None
        return False  # pragma: no cover

    def rows(self) -> list[dict]:
        """The stored result rows of this run, ordered by input position."""
        stored = self._query("SELECT row FROM results WHERE run_id = ? ORDER BY idx, input_id",
                             (self.run_id,))
        return [json.loads(r[0]) for r in stored.fetchall()]

    def write_attack(self, row: dict) -> None:
        """Store one ``hybridcert attack`` result (``row["id"]``, ``row["kind"]``,
        ``row["factor"]``), replacing an earlier attack of the same kind and factor."""
        payload = json.dumps(row, allow_nan=False)

        def write() -> None:
            with self.db:
                self.db.execute(_ATTACKS)
                self.db.execute(
                    "INSERT OR REPLACE INTO attacks (run_id, input_id, kind, factor, row, "
                    "written) VALUES (?, ?, ?, ?, ?, ?)",
                    (self.run_id, str(row["id"]), row["kind"], float(row["factor"]), payload,
                     time.time()))

        self._retry_locked(write)

    def attack_rows(self) -> list[dict]:
        """The stored attack results of this run (none before the first attack)."""
        tables = {r[0] for r in self._query(
            "SELECT name FROM sqlite_master WHERE type = 'table'", ())}
        if "attacks" not in tables:
            return []
        stored = self._query(
            "SELECT a.row FROM attacks a LEFT JOIN results r ON r.run_id = a.run_id AND "
            "r.input_id = a.input_id WHERE a.run_id = ? ORDER BY a.kind DESC, a.factor, r.idx, "
            "a.input_id", (self.run_id,))
        return [json.loads(r[0]) for r in stored.fetchall()]

    @property
    def details(self) -> dict:
        """What the run's configuration resolved to (see the constructor)."""
        row = self._query("SELECT details FROM runs WHERE run_id = ?", (self.run_id,))
        return json.loads(row.fetchone()[0])

    def runs(self) -> list[int]:
        return [r[0] for r in self._query("SELECT run_id FROM runs ORDER BY run_id", ())]

    @property
    def library_version(self) -> str:
        return self._query("SELECT library_version FROM runs WHERE run_id = ?",
                           (self.run_id,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _connect(path: Path, readonly: bool, timeout: float) -> sqlite3.Connection:
    if path.is_dir():
        raise StoreError(f"store {path} is a directory, not a file")
    if path.exists():
        try:
            with open(path, "rb") as handle:
                header = handle.read(len(_HEADER))
        except OSError as err:
            raise StoreError(f"store {path} cannot be read ({err.strerror})") from None
        if header and header != _HEADER:
            raise StoreError(f"{path} is not a hybridcert store (not a SQLite database)")
    elif readonly:
        raise StoreError(f"store {path} not found")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the folder of store {path} "
                             f"({err.strerror})") from None
    try:
        if readonly:
            try:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout,
                                     isolation_level=None)
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                # A WAL database in a read-only folder: no -shm can be created.
                db = sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=timeout,
                                     isolation_level=None)
        else:
            db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        db.execute("PRAGMA quick_check").fetchone()
        return db
    except sqlite3.DatabaseError as err:
        raise StoreError(_describe(path, err)) from None


def _describe(path: Path, err: sqlite3.DatabaseError) -> str:
    text = str(err)
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return f"store {path} cannot be written ({text}): is its folder read-only?"
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return f"store {path} is damaged or not a SQLite database ({text})"
    return f"store {path}: {text}"
