"""What a dataset is: its source, how its columns map to the model's blocks, its labels."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


class DataError(ValueError):
    """Bad input data: one line naming the file:line or row id, the field and what is
    allowed."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class DataSpec:
    """A dataset to certify and how its rows become the model's records.

    Parameters
    ----------
    source : str
        ``"safety:SPLIT[:N]"`` (the demo benchmark), a ``.jsonl`` file, a ``.parquet`` file
        (needs the ``parquet`` extra), a folder of ``.jsonl`` / ``.parquet`` files,
        ``"hateful_memes:FILE.jsonl"`` or ``"mm_safetybench[/KIND]:FOLDER"``.  Hateful Memes
        files and MM-SafetyBench folders are also recognised without the prefix.
    columns : {block name: column}, optional
        Which column feeds each block of the model.  None (default): the blocks the model
        declares, the noised blocks, and ``image`` / ``text`` when the data has such a
        column, each read from the column of the same name (or the layout's own column, e.g.
        Hateful Memes' ``img``).  Given: exactly these blocks, every column required.
    label_column, id_column : str
        Columns holding the label and the row id.  Rows without a label (missing or null)
        are kept with label None.  Either every row has an id or none has (ids are then the
        row's place, ``file:line``).
    label_map : {str: int}, optional
        String labels -> class index (CLI ``--label-map safe=0,unsafe=1``); strings are
        refused without it.
    num_classes : int
        Labels must lie in ``[0, num_classes)``.
    allow_outside_paths : bool
        Image paths are confined to the dataset's folder (after following symlinks) unless
        True.
    limit : int, optional
        Use only the first ``limit`` rows.
    strict : bool
        Refuse any change to a row (resizing, colour-mode conversion, truncation, a label
        ``1.0`` read as 1) instead of reporting it in ``Item.notes``.
    image_size : (int, int), optional
        ``(height, width)`` to resize images to when the model states no size (CLI
        ``--image-size``); resizing is reported.  Refused if the model states another size.
    """

    source: str
    columns: Mapping[str, str] | None = None
    label_column: str = "label"
    id_column: str = "id"
    label_map: Mapping[str, int] | None = None
    num_classes: int = 2
    allow_outside_paths: bool = False
    limit: int | None = None
    strict: bool = False
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise DataError(f"dataset must be a non-empty string, got {self.source!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 2:
            raise DataError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        if self.limit is not None and (isinstance(self.limit, bool)
                                       or not isinstance(self.limit, int) or self.limit < 1):
            raise DataError(f"limit must be an integer >= 1, got {self.limit!r}")
        for name in ("label_column", "id_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise DataError(f"{name} must be a non-empty string, got {value!r}")
        if self.label_column == self.id_column:
            raise DataError(f"label_column and id_column are both {self.label_column!r}")
        if self.columns is not None:
            object.__setattr__(self, "columns", _check_columns(self.columns, self))
        if self.label_map is not None:
            object.__setattr__(self, "label_map", _check_label_map(self.label_map,
                                                                   self.num_classes))
        if self.image_size is not None:
            size = self.image_size
            if isinstance(size, int) and not isinstance(size, bool):
                size = (size, size)
            size = tuple(size) if isinstance(size, (tuple, list)) else None
            if size is None or len(size) != 2 or any(
                    isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
                raise DataError(f"image_size must be (height, width) positive integers, got "
                                f"{self.image_size!r}")
            object.__setattr__(self, "image_size", size)

    def describe(self) -> dict:
        """JSON-ready description (stored with a run)."""
        return {"source": self.source,
                "columns": None if self.columns is None else dict(self.columns),
                "label_column": self.label_column, "id_column": self.id_column,
                "label_map": None if self.label_map is None else dict(self.label_map),
                "num_classes": self.num_classes,
                "allow_outside_paths": self.allow_outside_paths, "limit": self.limit,
                "strict": self.strict,
                "image_size": None if self.image_size is None else list(self.image_size)}


def _check_columns(columns, spec: DataSpec) -> dict[str, str]:
    if not isinstance(columns, Mapping) or not columns:
        raise DataError(f"columns must be a non-empty mapping block -> column, got {columns!r}")
    out = {}
    for block, column in columns.items():
        if not isinstance(block, str) or not block or block.endswith("_attention"):
            raise DataError(f"columns: block name must be a non-empty string not ending in "
                            f"'_attention', got {block!r}")
        if not isinstance(column, str) or not column:
            raise DataError(f"columns: column of block {block!r} must be a non-empty string, "
                            f"got {column!r}")
        if column in (spec.label_column, spec.id_column):
            raise DataError(f"columns: block {block!r} reads column {column!r}, which is the "
                            f"{'label' if column == spec.label_column else 'id'} column")
        out[block] = column
    used = list(out.values())
    twice = sorted({c for c in used if used.count(c) > 1})
    if twice:
        raise DataError(f"columns: column(s) {twice} feed more than one block")
    return out


def _check_label_map(label_map, num_classes: int) -> dict[str, int]:
    if not isinstance(label_map, Mapping) or not label_map:
        raise DataError(f"label_map must be a non-empty mapping label -> class, got "
                        f"{label_map!r}")
    out = {}
    for name, index in label_map.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"label_map: labels must be non-empty strings, got {name!r}")
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 0 <= index < num_classes:
            raise DataError(f"label_map: {name!r} must map to a class in [0, {num_classes}), "
                            f"got {index!r}")
        out[name] = index
    return out


def parse_label_map(text: str, num_classes: int | None = None) -> dict[str, int]:
    """``"safe=0,unsafe=1"`` -> ``{"safe": 0, "unsafe": 1}`` (for the command line)."""
    out: dict[str, int] = {}
    for part in _pairs(text, "label map", "safe=0,unsafe=1"):
        name, _, value = part.rpartition("=")
        name = name.strip()
        try:
            index = int(value.strip())
        except ValueError:
            raise DataError(f"label map: {part!r} must be LABEL=CLASS with an integer class, "
                            f"e.g. safe=0,unsafe=1") from None
        if name in out:
            raise DataError(f"label map: label {name!r} is given twice")
        out[name] = index
    return _check_label_map(out, num_classes) if num_classes else out


def parse_columns(text: str) -> dict[str, str]:
    """``"image=img,text=caption"`` -> ``{"image": "img", "text": "caption"}`` (block=column)."""
    out: dict[str, str] = {}
    for part in _pairs(text, "columns", "image=img,text=caption"):
        block, _, column = part.partition("=")
        block, column = block.strip(), column.strip()
        if not block or not column:
            raise DataError(f"columns: {part!r} must be BLOCK=COLUMN, e.g. image=img")
        if block in out:
            raise DataError(f"columns: block {block!r} is given twice")
        out[block] = column
    return out


def _pairs(text: str, what: str, example: str) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{what} must look like {example}, got {text!r}")
    parts = [p for p in text.split(",") if p.strip()]
    for part in parts:
        if "=" not in part:
            raise DataError(f"{what}: {part!r} must look like {example}")
    return parts


def finite_integral(value: float) -> bool:
    return math.isfinite(value) and float(value).is_integer()
