"""Issue 11: stores that are not ours, damaged or unwritable are refused in one line and never
altered; concurrent writers wait instead of failing; one run per configuration."""

import hashlib
import multiprocessing
import os
import sqlite3

import pytest

from hybridcert.cli.main import main
from hybridcert.runs.config import RunConfig
from hybridcert.runs.store import RunStore, StoreError, StoreMismatchError

CONFIG = RunConfig(model="tests.runs.toy_model:factory", sigma=0.25, keep_prob=0.3, n=100,
                   alpha=0.01).to_dict()
OTHER = dict(CONFIG, n=200)


def row(i, label=1):
    return {"id": f"in{i}", "idx": i, "label": label, "predict": 1, "time": 0.1,
            "queries": 116, "frontier": [{"tokens": 0, "gamma": 0.5, "l2_radius": 0.125}]}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def good_store(tmp_path):
    path = tmp_path / "good.sqlite"
    with RunStore(path, CONFIG) as store:
        for i in range(3):
            store.write(row(i), f"hash{i}")
    return path


def damaged(tmp_path, good_store, kind):
    path = tmp_path / f"{kind}.sqlite"
    if kind == "random":
        path.write_bytes(os.urandom(8192))
    elif kind == "truncated":
        db = sqlite3.connect(good_store)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        path.write_bytes(good_store.read_bytes()[:1500])
    elif kind == "foreign":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE results (x)")
        db.execute("CREATE TABLE other (y)")
        db.commit()
        db.close()
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["random", "truncated", "foreign", "directory"])
def test_damaged_or_foreign_stores_are_refused_unaltered(tmp_path, good_store, kind, capsys):
    path = damaged(tmp_path, good_store, kind)
    before = None if path.is_dir() else digest(path)
    with pytest.raises(StoreError):
        RunStore(path, CONFIG)
    with pytest.raises(StoreError):
        RunStore(path, readonly=True)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridcert: error:") and len(err.splitlines()) == 1
    if before is not None:
        assert digest(path) == before


def test_read_only_folder(tmp_path, good_store, capsys):
    """A new store cannot be made in a read-only folder (one-line error); an existing one is
    still reported on, unaltered.  As root, permission bits do not bind: the folder is made
    immutable (chattr +i) instead."""
    import shutil
    import subprocess

    folder = tmp_path / "locked"
    folder.mkdir()
    db = sqlite3.connect(good_store)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    target = folder / "run.sqlite"
    target.write_bytes(good_store.read_bytes())
    before = digest(target)
    root = os.geteuid() == 0
    if root:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("root without chattr +i: cannot make a read-only folder")
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="cannot be written|read-only"):
            RunStore(folder / "new.sqlite", CONFIG)
        with RunStore(target, readonly=True) as store:
            assert len(store.rows()) == 3
        assert main(["report", str(target), "--out", str(tmp_path / "report")]) == 0
        capsys.readouterr()
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)
    assert not (folder / "new.sqlite").exists()
    assert digest(target) == before


def test_read_only_store_opens_for_reports_without_writing(tmp_path, good_store):
    before = digest(good_store)
    with RunStore(good_store, readonly=True) as store:
        assert [r["id"] for r in store.rows()] == ["in0", "in1", "in2"]
        assert store.finished() == {"in0": "hash0", "in1": "hash1", "in2": "hash2"}
    assert digest(good_store) == before


def test_a_different_configuration_is_refused(good_store):
    with pytest.raises(StoreMismatchError, match="differs in n"):
        RunStore(good_store, OTHER)
    with RunStore(good_store, OTHER, new_run=True) as store:
        assert store.run_id == 2 and store.finished() == {}


def test_rows_are_keyed_by_id_and_the_first_writer_wins(tmp_path):
    with RunStore(tmp_path / "s.sqlite", CONFIG) as store:
        assert store.write(row(0), "a")
        assert not store.write(row(0, label=0), "b")             # already stored: kept
        assert store.finished() == {"in0": "a"}
        assert store.write(row(0, label=0), "b", replace=True)   # explicit re-certification
        assert store.finished() == {"in0": "b"} and store.rows()[0]["label"] == 0


def test_concurrent_writers_share_one_run(tmp_path):
    """Six processes open the same new store at once: one run is created, every row lands,
    and no 'database is locked' escapes."""
    path = tmp_path / "shared.sqlite"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(6)
    from tests.runs.store_writer import write_rows

    workers = [ctx.Process(target=write_rows, args=(path, CONFIG, 20 * k, 20, barrier))
               for k in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert all(w.exitcode == 0 for w in workers)
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 120


def test_schema_check_reads_one_snapshot(tmp_path, monkeypatch):
    """Another process creating the schema between the check's reads of the table list and
    of the header must not make the check see half a store (the concurrent-writer test
    failed once on 'has schema 2, this hybridcert reads schema 2')."""
    path = tmp_path / "race.sqlite"
    query, injected = RunStore._query, []

    def query_then_let_another_writer_in(self, sql, args):
        result = query(self, sql, args)
        if "sqlite_master" in sql and not injected:
            injected.append(True)
            try:                      # the other writer, between the reads
                RunStore(path, CONFIG, timeout=0.3).close()
                injected.append("committed")
            except StoreError:
                injected.append("kept out")       # the check holds its snapshot
        return result

    monkeypatch.setattr(RunStore, "_query", query_then_let_another_writer_in)
    with RunStore(path, CONFIG) as store:
        assert store.run_id == 1
    assert injected[1] == "kept out"


def test_attack_rows_in_a_store_written_before_the_attacks_table(tmp_path):
    """Stores created before ``hybridcert attack`` existed have no attacks table: they still
    open, report no attacks, and get the table on their first attack."""
    path = tmp_path / "old.sqlite"
    with RunStore(path, {"a": 1}) as store:
        store.write({"id": "x", "idx": 0, "label": 1, "predict": 1}, "h")
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE attacks")
    with RunStore(path, readonly=True) as store:
        assert store.attack_rows() == []
    row = {"id": "x", "kind": "inside", "factor": 1.0, "outcome": "held"}
    with RunStore(path) as store:
        store.write_attack(row)
        store.write_attack({**row, "outcome": "undecided"})       # same attack: replaced
        store.write_attack({**row, "kind": "beyond", "factor": 2.0})
    with RunStore(path, readonly=True) as store:
        assert [(r["kind"], r["outcome"]) for r in store.attack_rows()] == [
            ("inside", "undecided"), ("beyond", "held")]
        assert store.rows()[0]["id"] == "x"


def test_a_store_of_schema_2_is_refused_in_one_line(good_store, capsys):
    """Schema 3 rows say how each decision ended; a store written before (schema 2) is refused
    by name, unaltered, both for certifying into it and for reports."""
    db = sqlite3.connect(good_store)
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    before = digest(good_store)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="older hybridcert \\(schema 2: its rows do not "
                           "say how each decision ended\\).*schema 3"):
            RunStore(good_store, None if readonly else CONFIG, readonly=readonly)
    assert main(["report", str(good_store), "--out",
                 str(good_store.parent / "rep")]) == 2
    assert "schema 2" in capsys.readouterr().err
    assert digest(good_store) == before


def test_the_class_status_is_a_column(tmp_path):
    path = tmp_path / "s.sqlite"
    with RunStore(path, CONFIG) as store:
        store.write(dict(row(0), status="refuted", decided_at=70), "h0")
    db = sqlite3.connect(path)
    assert db.execute("SELECT status FROM results").fetchall() == [("refuted",)]
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.close()
