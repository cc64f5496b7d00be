"""Where rows come from: JSONL and Parquet files, folders of them, and the layouts of public
benchmarks (Hateful Memes, MM-SafetyBench) read as they are distributed.

Every reader yields :class:`RawRow` objects (the parsed row, where it came from, the folder its
image paths are relative to); :mod:`hybridcert.datasets.items` validates them.

Layout assumptions
------------------
*Hateful Memes* (Facebook AI, 2020): a folder with ``train.jsonl``, ``dev_seen.jsonl``,
``test_seen.jsonl`` (and ``*_unseen``), each line ``{"id": 42953, "img": "img/42953.png",
"label": 0, "text": "..."}``, image paths relative to the file's folder; test files may have
no label (kept, label None).  ``hateful_memes:FILE.jsonl`` reads one file with ``image <-
img``; a plain ``.jsonl`` whose rows have ``img`` and ``text`` but no ``image`` column is read
the same way (the layout is reported).  A folder of the five files is refused (the splits
overlap): name one file.

*MM-SafetyBench* (Liu et al., ECCV 2024; github isXinLiu/MM-SafetyBench): a folder holding
``processed_questions/NN-Scenario.json`` and ``imgs/NN-Scenario/{SD,SD_TYPO,TYPO}/<key>.jpg``
(either the folder itself or its ``data/`` subfolder).  Each JSON file maps a question key
(``"0"``, ``"1"``, ...) to fields such as ``"Question"``, ``"Changed Question"``, ``"Key
Phrase"``, ``"Phrase Type"``, ``"Rephrased Question"`` and ``"Rephrased Question(SD)"``.  As in
the benchmark's own evaluation, SD images are paired with ``"Rephrased Question(SD)"`` and
SD_TYPO / TYPO images with ``"Rephrased Question"``; every item is *unsafe* (label string
``"unsafe"``, class 1 by the default label map ``safe=0, unsafe=1``).  One row per question and
image kind, id ``"NN-Scenario/<key>/<KIND>"``; ``mm_safetybench/KIND:FOLDER`` keeps one kind.
The original fields stay available as columns (e.g. ``columns={"image": "image", "text":
"Question"}``).  A missing image or text is an error, never a skipped row.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridcert.datasets.spec import DataError, DataSpec

DEFAULT_COLUMNS = {"image": "image", "text": "text"}
HATEFUL_MEMES_COLUMNS = {"image": "img", "text": "text"}
MM_SAFETYBENCH_KINDS = ("SD", "SD_TYPO", "TYPO")
MM_SAFETYBENCH_TEXT = {"SD": "Rephrased Question(SD)", "SD_TYPO": "Rephrased Question",
                       "TYPO": "Rephrased Question"}
SAFETY_LABEL_MAP = {"safe": 0, "unsafe": 1}
#: Where ``safety:SPLIT`` datasets are written before they are read like any user's.
SAFETY_EXPORT_DIR = Path("artifacts/data/export")


@dataclass
class RawRow:
    """One parsed row before validation."""

    where: str            # "data.jsonl:12", shown in errors
    data: Any             # the parsed row (a dict when well formed)
    base: Path            # folder the row's image paths are relative to (and confined to)
    auto_id: str          # the row's id when the data has no id column


@dataclass
class Source:
    """The rows of a dataset and what its layout implies."""

    layout: str                                   # jsonl, parquet, folder, hateful_memes, ...
    path: Path
    rows: list[RawRow]
    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    label_map: dict[str, int] | None = None       # the layout's default
    notes: list[str] = field(default_factory=list)


def read_source(spec: DataSpec) -> Source:
    """Parse ``spec.source`` and read its rows (at most ``spec.limit``)."""
    text = spec.source
    prefix, sep, rest = text.partition(":")
    if sep and prefix == "safety":
        return _safety(rest, spec)
    if sep and prefix == "hateful_memes":
        return _hateful_memes(Path(rest), spec, explicit=True)
    if sep and (prefix == "mm_safetybench" or prefix.startswith("mm_safetybench/")):
        kind = prefix.partition("/")[2] or None
        if kind is not None and kind not in MM_SAFETYBENCH_KINDS:
            raise DataError(f"dataset {text!r}: MM-SafetyBench image kind must be one of "
                            f"{', '.join(MM_SAFETYBENCH_KINDS)}, got {kind!r}")
        return _mm_safetybench(Path(rest), spec, kind)
    path = Path(text)
    info = _stat(path, text)
    if stat.S_ISDIR(info.st_mode):
        if _mm_root(path) is not None:
            return _mm_safetybench(path, spec, None)
        return _folder(path, spec)
    if path.suffix == ".jsonl":
        return _jsonl_source(path, spec)
    if path.suffix == ".parquet":
        rows: list[RawRow] = []
        _read_parquet(path, path.parent, str(path), spec.limit, rows)
        return Source("parquet", path, rows)
    raise DataError(f"dataset {text!r}: expected safety:SPLIT[:N], a .jsonl or .parquet file, a "
                    f"folder of them, hateful_memes:FILE.jsonl or mm_safetybench:FOLDER")


# -- files -------------------------------------------------------------------------------

def _stat(path: Path, shown: str):
    try:
        return path.stat()
    except FileNotFoundError:
        raise DataError(f"dataset {shown!r} not found") from None
    except OSError as err:
        raise DataError(f"dataset {shown!r} cannot be read ({err.strerror})") from None


def _regular(path: Path, shown: str) -> None:
    info = _stat(path, shown)
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"dataset file {shown} is not a regular file")


class _DuplicateKey(ValueError):
    pass


def _object(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_jsonl(path: Path, base: Path, shown: str, limit: int | None,
                rows: list[RawRow]) -> None:
    """Append the rows of a JSONL file (strict UTF-8, one JSON value per non-blank line)."""
    _regular(path, shown)
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below; errors name the file)
    except OSError as err:
        raise DataError(f"dataset file {shown} cannot be read ({err.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{shown}:{number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} "
                                f"at column {err.start + 1}); save the file as UTF-8") from None
            line = line.rstrip("\r\n")
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                data = json.loads(line, object_pairs_hook=_object)
            except _DuplicateKey as err:
                raise DataError(f"{shown}:{number}: key {err.args[0]!r} appears twice in the "
                                f"row") from None
            except json.JSONDecodeError as err:
                raise DataError(f"{shown}:{number}: not valid JSON ({err.msg} at column "
                                f"{err.colno})") from None
            except (ValueError, RecursionError) as err:
                raise DataError(f"{shown}:{number}: not valid JSON ({err})") from None
            rows.append(RawRow(f"{shown}:{number}", data, base, f"{shown}:{number}"))
            if limit is not None and len(rows) >= limit:
                return


def _read_parquet(path: Path, base: Path, shown: str, limit: int | None,
                  rows: list[RawRow]) -> None:
    _regular(path, shown)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading .parquet needs pyarrow: pip install 'hybridcert[parquet]'") \
            from None
    try:
        parquet = pq.ParquetFile(path)
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for data in batch.to_pylist():
                number += 1
                rows.append(RawRow(f"{shown} row {number}", data, base, f"{shown}#{number}"))
                if limit is not None and len(rows) >= limit:
                    return
    except DataError:
        raise
    except Exception as err:  # pyarrow raises its own error types for a damaged file
        raise DataError(f"{shown}: not a readable Parquet file ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None


def _jsonl_source(path: Path, spec: DataSpec) -> Source:
    rows: list[RawRow] = []
    _read_jsonl(path, path.parent, str(path), spec.limit, rows)
    if spec.columns is None and _looks_like_hateful_memes(rows):
        return Source("hateful_memes", path, rows, dict(HATEFUL_MEMES_COLUMNS),
                      notes=["recognised the Hateful Memes layout: image <- img"])
    return Source("jsonl", path, rows)


def _folder(path: Path, spec: DataSpec) -> Source:
    files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet")
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"dataset folder {path} holds no .jsonl or .parquet file")
    rows: list[RawRow] = []
    for file in files:
        if spec.limit is not None and len(rows) >= spec.limit:
            break
        reader = _read_jsonl if file.suffix == ".jsonl" else _read_parquet
        reader(file, path, file.name, spec.limit, rows)
    if spec.columns is None and _looks_like_hateful_memes(rows):
        return Source("hateful_memes", path, rows, dict(HATEFUL_MEMES_COLUMNS),
                      notes=["recognised the Hateful Memes layout: image <- img"])
    return Source("folder", path, rows)


# -- layouts -----------------------------------------------------------------------------

def _looks_like_hateful_memes(rows: list[RawRow]) -> bool:
    first = rows[0].data if rows else None
    return isinstance(first, dict) and "img" in first and "text" in first \
        and "image" not in first and set(first) <= {"id", "img", "text", "label"}


def _hateful_memes(path: Path, spec: DataSpec, explicit: bool) -> Source:
    info = _stat(path, str(path))
    if stat.S_ISDIR(info.st_mode):
        names = sorted(p.name for p in path.glob("*.jsonl"))
        raise DataError(f"hateful_memes:{path} is a folder; name one split file (its splits "
                        f"overlap), one of: {', '.join(names) or 'none found'}")
    rows: list[RawRow] = []
    _read_jsonl(path, path.parent, str(path), spec.limit, rows)
    return Source("hateful_memes", path, rows, dict(HATEFUL_MEMES_COLUMNS))


def _mm_root(path: Path) -> Path | None:
    for root in (path, path / "data"):
        if (root / "processed_questions").is_dir() and (root / "imgs").is_dir():
            return root
    return None


def _mm_safetybench(path: Path, spec: DataSpec, kind: str | None) -> Source:
    _stat(path, str(path))
    root = _mm_root(path)
    if root is None:
        raise DataError(f"mm_safetybench:{path}: expected processed_questions/ and imgs/ in the "
                        f"folder or in its data/ subfolder")
    kinds = (kind,) if kind else MM_SAFETYBENCH_KINDS
    files = sorted((root / "processed_questions").glob("*.json"))
    if not files:
        raise DataError(f"mm_safetybench:{path}: processed_questions/ holds no .json file")
    rows: list[RawRow] = []
    for file in files:
        shown = f"processed_questions/{file.name}"
        _regular(file, shown)
        try:
            questions = json.loads(file.read_bytes().decode("utf-8"),
                                   object_pairs_hook=_object)
        except UnicodeDecodeError:
            raise DataError(f"{shown}: not valid UTF-8; save the file as UTF-8") from None
        except _DuplicateKey as err:
            raise DataError(f"{shown}: question key {err.args[0]!r} appears twice") from None
        except ValueError as err:
            raise DataError(f"{shown}: not valid JSON ({err})") from None
        if not isinstance(questions, dict):
            raise DataError(f"{shown}: expected an object of questions keyed by number")
        bad = [k for k in questions if not k.isdigit()]
        if bad:
            raise DataError(f"{shown}: question keys must be numbers, got {bad[0]!r}")
        scenario = file.stem
        for key in sorted(questions, key=int):
            item = questions[key]
            if not isinstance(item, dict):
                raise DataError(f"{shown} question {key}: expected an object of fields, got "
                                f"{type(item).__name__}")
            for k in kinds:
                where = f"{shown} question {key} ({k})"
                field_name = MM_SAFETYBENCH_TEXT[k]
                data = dict(item)
                data.update({"id": f"{scenario}/{key}/{k}",
                             "image": f"imgs/{scenario}/{k}/{key}.jpg",
                             "label": "unsafe", "scenario": scenario, "kind": k})
                if field_name in item:
                    data["text"] = item[field_name]
                elif spec.columns is None or spec.columns.get("text") == "text":
                    raise DataError(f"{where}: the question has no {field_name!r} field (the "
                                    f"text paired with {k} images); keep another kind with "
                                    f"mm_safetybench/KIND:PATH or map text to another field")
                rows.append(RawRow(where, data, root, data["id"]))
                if spec.limit is not None and len(rows) >= spec.limit:
                    return _mm_source(path, rows, kinds)
    return _mm_source(path, rows, kinds)


def _mm_source(path: Path, rows: list[RawRow], kinds) -> Source:
    return Source("mm_safetybench", path, rows, dict(DEFAULT_COLUMNS), dict(SAFETY_LABEL_MAP),
                  notes=[f"MM-SafetyBench: image kinds {', '.join(kinds)}, every item unsafe"])


def _safety(rest: str, spec: DataSpec) -> Source:
    parts = rest.split(":") if rest else []
    split = parts[0] if parts and parts[0] else "test"
    if split not in ("train", "val", "test") or len(parts) > 2:
        raise DataError(f"dataset 'safety:{rest}': expected safety:SPLIT[:N] with SPLIT train, "
                        f"val or test")
    limit = spec.limit
    if len(parts) == 2:
        try:
            count = int(parts[1])
        except ValueError:
            count = 0
        if count < 1:
            raise DataError(f"dataset 'safety:{rest}': N must be an integer >= 1, got "
                            f"{parts[1]!r}")
        limit = count if limit is None else min(limit, count)
    from hybridcert.datasets import safety

    export = getattr(safety, "export_split", None)
    if export is None:
        raise DataError("safety:SPLIT needs hybridcert.datasets.safety.export_split, which this "
                        "version lacks")
    out_dir = SAFETY_EXPORT_DIR / (f"{split}" if limit is None else f"{split}-{limit}")
    written = export(split, out_dir, limit)
    target = Path(written) if written is not None else out_dir
    if target.is_dir():
        files = sorted(target.glob("*.jsonl"))
        if len(files) != 1:
            raise DataError(f"safety export {target} should hold one .jsonl file, found "
                            f"{len(files)}")
        target = files[0]
    rows: list[RawRow] = []
    _read_jsonl(target, target.parent, str(target), limit, rows)
    return Source("safety", target, rows)


def realpath_inside(path: Path, folder: Path) -> tuple[Path, bool]:
    """``path`` with symlinks resolved, and whether it lies inside ``folder``."""
    real = Path(os.path.realpath(path))
    top = Path(os.path.realpath(folder))
    return real, real == top or top in real.parents
