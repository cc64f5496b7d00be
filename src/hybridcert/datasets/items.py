"""Rows -> the records the model expects, validated up front, loaded lazily.

Every row is checked before a run starts (ids, labels, every text encoded with the model's own
tokenizer, every image read, decoded and brought to the model's size), so a run fails before it
writes anything.  Images are not kept in memory: :meth:`Item.record` reads the file again, checks
that its bytes are the ones validated (their hash is part of the item's ``content_hash``) and
processes it.  Token ids are kept (a few hundred integers per row).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybridcert.adapters.base import ModelAdapter
from hybridcert.adapters.images import ImageError, ImageProcessor, decode_image, read_image_file
from hybridcert.blocks import Record, TextEncoder, TextError, TokenBlock
from hybridcert.datasets.sources import RawRow, Source, read_source, realpath_inside
from hybridcert.datasets.spec import DataError, DataSpec, finite_integral


@dataclass(frozen=True)
class TokenData:
    """A token block, encoded when the dataset was loaded; ``text`` is the row's text (None
    for pre-tokenized ids) and ``cut`` says whether it was cut to the model's maximum length
    (both for :mod:`hybridcert.inspect`)."""

    block: TokenBlock
    text: str | None = field(default=None, repr=False)
    cut: bool = False

    def load(self, where: str) -> TokenBlock:
        return self.block


@dataclass(frozen=True)
class ImageData:
    """An image block: where its bytes are (a file, or the bytes themselves for images embedded
    in a Parquet file), their SHA-256 and the processor that makes the model's tensor."""

    processor: ImageProcessor
    digest: str
    name: str
    path: str | None = None
    data: bytes | None = field(default=None, repr=False)

    def load(self, where: str) -> torch.Tensor:
        image = self.decode(where)
        try:
            tensor, _ = self.processor.process(image)
        except ImageError as err:
            raise DataError(f"{where}: {err}") from None
        return tensor

    def decode(self, where: str):
        """The image as read (a PIL image, before the processor), its bytes checked against
        the ones validated."""
        try:
            raw = self.data if self.data is not None else read_image_file(self.path)
            if hashlib.sha256(raw).hexdigest() != self.digest:
                raise DataError(f"{where}: image {self.name} changed since the dataset was "
                                f"checked; load the dataset again")
            return decode_image(raw, self.name, self.processor.max_pixels)
        except ImageError as err:
            raise DataError(f"{where}: {err}") from None


@dataclass(frozen=True)
class VectorData:
    """A continuous block given as numbers in the row (an embedding, audio features)."""

    tensor: torch.Tensor

    def load(self, where: str) -> torch.Tensor:
        return self.tensor


@dataclass
class Item:
    """One validated input of a run.

    Attributes
    ----------
    idx : int
        Position in the dataset (0-based).
    input_id : str
        The row's id (its ``id`` column, or ``file:line`` when the data has none); unique.
    label : int or None
        Class index, None for an unlabelled row.
    content_hash : str
        SHA-256 (hex) of the row as the model sees it: the column mapping, the label, each
        text (or pre-tokenized ids) and each image file's bytes.  A resumed run keyed by
        ``(input_id, content_hash)`` detects a changed row.
    notes : list of str
        Every change made to the row (resizing, colour-mode conversion, truncation, a label
        read from ``1.0``), for the run log; empty in strict mode (changes are refused).
    where : str
        The row's place (``file:line``), for messages.
    """

    idx: int
    input_id: str
    label: int | None
    content_hash: str
    notes: list[str] = field(default_factory=list)
    where: str = ""
    blocks: dict[str, TokenData | ImageData | VectorData] = field(default_factory=dict,
                                                                   repr=False)

    def record(self) -> Record:
        """The blocks ready for :meth:`HybridNoise.prepare` (images read from disk now).

        Raises :class:`DataError` if an image changed or disappeared since validation."""
        return {name: data.load(self.where) for name, data in self.blocks.items()}


@dataclass
class Dataset:
    """The validated items of a dataset and how they were read."""

    items: list[Item]
    layout: str
    columns: dict[str, str]
    kinds: dict[str, str]
    notes: list[str]

    def __len__(self) -> int:
        return len(self.items)

    def changes(self) -> dict[str, int]:
        """How many items each kind of change touched (numbers replaced by N), for the run
        log: e.g. ``{"image: resize NxN -> NxN": 12}``."""
        counts: dict[str, int] = {}
        for item in self.items:
            for note in {_kind_of_note(n) for n in item.notes}:
                counts[note] = counts.get(note, 0) + 1
        return counts

    def describe(self) -> dict:
        labelled = sum(item.label is not None for item in self.items)
        return {"layout": self.layout, "items": len(self.items), "labelled": labelled,
                "columns": dict(self.columns), "kinds": dict(self.kinds),
                "notes": list(self.notes), "changes": self.changes()}


def load_items(spec: DataSpec, adapter: ModelAdapter | Any | None = None,
               noised_blocks: Iterable[str] | None = None) -> list[Item]:
    """The dataset's validated items, in a fixed order (see :func:`load_dataset`)."""
    return load_dataset(spec, adapter, noised_blocks).items


def load_dataset(spec: DataSpec, adapter: ModelAdapter | Any | None = None,
                 noised_blocks: Iterable[str] | None = None) -> Dataset:
    """Read and validate every row of ``spec`` for the model of ``adapter``.

    Parameters
    ----------
    spec : DataSpec
    adapter : ModelAdapter or model, optional
        The model side: ``adapter.text[block]`` encodes each text block (the model's own
        tokenizer; never another's), ``adapter.images[block]`` loads each image block.  A bare
        model or None: no text handling (texts must be pre-tokenized and not noised), images
        as they are (or resized to ``spec.image_size``).
    noised_blocks : iterable of str, optional
        The blocks the run noises.  None (default): every block is treated as noised (the
        strictest checks).  A noised block must be fed by a column, and a noised text block
        needs the model's text handling.

    Returns
    -------
    Dataset
        ``.items`` (:class:`Item` list), ``.layout``, ``.columns`` (block -> column),
        ``.kinds`` (block -> ``"image"`` / ``"text"``), ``.notes``.

    Raises
    ------
    DataError
        One line naming the row (``file:line``, and its id) or the parameter, the field and
        what is allowed.
    """
    if not isinstance(spec, DataSpec):
        raise DataError(f"spec must be a DataSpec, got {type(spec).__name__}")
    text_encoders, processors, model_classes, model_name = _model_side(adapter)
    if model_classes is not None and model_classes != spec.num_classes:
        raise DataError(f"num_classes is {spec.num_classes} but the model {model_name} predicts "
                        f"{model_classes} classes")
    source = read_source(spec)
    if not source.rows:
        raise DataError(f"dataset {spec.source!r} holds no rows")
    noised = None if noised_blocks is None else set(noised_blocks)
    columns = _columns(spec, source, text_encoders, processors, noised)
    kinds = _kinds(columns, text_encoders, processors, model_name)
    noised = set(columns) if noised is None else noised
    for block, kind in kinds.items():
        if kind == "text" and block in noised and block not in text_encoders:
            raise DataError(f"text block {block!r} is noised but the model {model_name} gives "
                            f"no text handling for it (a TextEncoder in its adapter); hybridcert "
                            f"never falls back to another model's tokenizer")
    image_processors = {block: _processor(block, processors.get(block), spec)
                        for block, kind in kinds.items() if kind == "image"}
    label_map = spec.label_map if spec.label_map is not None else source.label_map
    if label_map is not None:
        bad = {k: v for k, v in label_map.items() if not 0 <= v < spec.num_classes}
        if bad:
            raise DataError(f"the layout's label map {bad} does not fit num_classes "
                            f"{spec.num_classes}; give a label map")
    has_ids = [isinstance(r.data, dict) and spec.id_column in r.data for r in source.rows]
    use_ids = any(has_ids)
    rows_as_dicts = [r.data for r in source.rows if isinstance(r.data, dict)]
    if rows_as_dicts and not use_ids and spec.id_column != "id" and \
            not source.columns.get("id"):
        raise DataError(f"id column {spec.id_column!r} appears in no row; the columns are "
                        f"{sorted(present_columns(source))[:12]}")
    if rows_as_dicts and not any(spec.label_column in d for d in rows_as_dicts) and \
            (spec.label_column != "label" or spec.label_map is not None):
        raise DataError(f"label column {spec.label_column!r} appears in no row (every row "
                        f"would be unlabelled); the columns are "
                        f"{sorted(present_columns(source))[:12]}")
    context = _Context(spec, columns, kinds, text_encoders, image_processors, label_map,
                       use_ids)
    items: list[Item] = []
    seen: dict[str, str] = {}
    for idx, row in enumerate(source.rows):
        if use_ids and isinstance(row.data, dict) and not has_ids[idx]:
            raise DataError(f"{row.where}: the row has no {spec.id_column!r} column while other "
                            f"rows have one; give every row an id, or none")
        item = _item(idx, row, context)
        if item.input_id in seen:
            raise DataError(f"{row.where}: id {item.input_id!r} duplicates the row at "
                            f"{seen[item.input_id]}; ids must be unique")
        seen[item.input_id] = row.where
        items.append(item)
    return Dataset(items, source.layout, columns, kinds, list(source.notes))


# -- the model side ------------------------------------------------------------------------

def _model_side(adapter):
    if adapter is None:
        return {}, {}, None, "(none)"
    adapter = ModelAdapter.wrap(adapter)
    return dict(adapter.text), dict(adapter.images), adapter.num_classes, repr(adapter.name)


def present_columns(source: Source) -> set[str]:
    """Every column name that appears in some row."""
    out: set[str] = set()
    for row in source.rows:
        if isinstance(row.data, dict):
            out.update(row.data)
    return out


def _columns(spec: DataSpec, source: Source, text_encoders, processors,
             noised: set[str] | None) -> dict[str, str]:
    declared = set(text_encoders) | set(processors)
    required = declared | (noised or set())
    present = set()
    for row in source.rows:
        if isinstance(row.data, dict):
            present.update(row.data)
    # Blocks read the column of their own name (or the layout's), unless mapped explicitly.
    columns = {}
    for block in sorted(required | set(source.columns)):
        column = source.columns.get(block, block)
        if column in present:
            columns[block] = column
    if spec.columns is not None:
        columns.update(spec.columns)
        absent = sorted(c for c in spec.columns.values() if c not in present)
        if absent and source.rows:
            raise DataError(f"column(s) {absent} appear in no row of the dataset; its columns "
                            f"are {sorted(present)[:12]}")
    if not columns:
        raise DataError(f"no column feeds the model: the rows have columns "
                        f"{sorted(present)[:12]}; map them, e.g. --columns "
                        f"image=img,text=caption")
    missing = sorted((noised or set()) - set(columns))
    if missing:
        raise DataError(f"the noise names block(s) {missing} but no dataset column feeds them "
                        f"(columns: {columns}); map one with --columns BLOCK=COLUMN, or check "
                        f"the block names of --block")
    unfed = sorted(declared - set(columns))
    if unfed:
        raise DataError(f"the model takes block(s) {unfed} but no dataset column feeds them "
                        f"(columns: {columns})")
    return columns


def _kinds(columns, text_encoders, processors, model_name) -> dict[str, str]:
    kinds = {}
    for block in columns:
        if block in text_encoders and block in processors:
            raise DataError(f"the model {model_name} declares block {block!r} both as text and "
                            f"as an image")
        if block in processors or (block not in text_encoders and block == "image"):
            kinds[block] = "image"
        elif block in text_encoders or block == "text":
            kinds[block] = "text"
        else:
            raise DataError(f"block {block!r} is neither an image nor a text block of the model "
                            f"{model_name} (it declares images {sorted(processors)} and text "
                            f"{sorted(text_encoders)})")
    return kinds


def _processor(block: str, processor: ImageProcessor | None, spec: DataSpec) -> ImageProcessor:
    try:
        return ImageProcessor.sized(processor, spec.image_size, block)
    except ValueError as err:
        raise DataError(str(err)) from None


# -- rows ----------------------------------------------------------------------------------

@dataclass
class _Context:
    spec: DataSpec
    columns: dict[str, str]
    kinds: dict[str, str]
    text_encoders: Mapping[str, TextEncoder]
    processors: Mapping[str, ImageProcessor]
    label_map: Mapping[str, int] | None
    use_ids: bool
    bounds: dict[str, int] = field(default_factory=dict)


def _item(idx: int, row: RawRow, ctx: _Context) -> Item:
    spec = ctx.spec
    data = row.data
    if not isinstance(data, dict):
        raise DataError(f"{row.where}: a row must be a JSON object of columns, got "
                        f"{_kind(data)}")
    input_id = _id(row, ctx) if ctx.use_ids else row.auto_id
    where = f"{row.where} (id {input_id!r})" if ctx.use_ids else row.where
    notes: list[str] = []
    label = _label(data, where, ctx, notes)
    blocks: dict[str, TokenData | ImageData] = {}
    hashed: dict[str, Any] = {}
    for block, column in ctx.columns.items():
        if column not in data:
            raise DataError(f"{where}: the row has no column {column!r} (block {block!r}); its "
                            f"columns are {sorted(data)[:12]}")
        value = data[column]
        if ctx.kinds[block] == "image":
            blocks[block], hashed[block] = _image(value, block, column, row, where, ctx, notes)
        else:
            blocks[block], hashed[block] = _text(value, block, column, where, ctx, notes)
    if spec.strict and notes:
        raise DataError(f"{where}: {notes[0]} (strict mode allows no change to the data)")
    content = {"columns": ctx.columns, "label": label, "blocks": hashed}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode("ascii")).hexdigest()
    return Item(idx, input_id, label, digest, notes, where, blocks)


def _id(row: RawRow, ctx: _Context) -> str:
    value = row.data[ctx.spec.id_column]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{row.where}: id must be a string or an integer, got {_kind(value)}")
    value = str(value)
    if not value.strip():
        raise DataError(f"{row.where}: id is empty")
    _check_unicode(value, f"{row.where}: id")
    return value


def _label(data: dict, where: str, ctx: _Context, notes: list[str]) -> int | None:
    spec = ctx.spec
    value = data.get(spec.label_column)
    if value is None:
        return None
    allowed = f"labels are class indices 0..{spec.num_classes - 1} or strings with a label map"
    if isinstance(value, bool):
        raise DataError(f"{where}: label {value!r} is a boolean; {allowed}")
    if isinstance(value, int):
        index = value
    elif isinstance(value, float):
        if not finite_integral(value):
            raise DataError(f"{where}: label {value!r} is not a class index (never rounded); "
                            f"{allowed}")
        index = int(value)
        notes.append(f"label {value!r} read as {index}")
    elif isinstance(value, str):
        _check_unicode(value, f"{where}: label")
        if ctx.label_map is None:
            raise DataError(f"{where}: label {value!r} is a string; map every label to a "
                            f"class index with --label-map (e.g. --label-map safe=0,unsafe=1), "
                            f"or use integer labels")
        if value not in ctx.label_map:
            raise DataError(f"{where}: label {value!r} is not in the label map "
                            f"{sorted(ctx.label_map)}")
        index = ctx.label_map[value]
    else:
        raise DataError(f"{where}: label must be an integer class index or a string, got "
                        f"{_kind(value)}")
    if not 0 <= index < spec.num_classes:
        raise DataError(f"{where}: label {value!r} is outside the classes "
                        f"0..{spec.num_classes - 1}")
    return index


def _text(value, block: str, column: str, where: str, ctx: _Context,
          notes: list[str]) -> tuple[TokenData, dict]:
    encoder = ctx.text_encoders.get(block)
    field_name = f"{where}: column {column!r}"
    if isinstance(value, str):
        _check_unicode(value, field_name)
        if encoder is None:
            raise DataError(f"{field_name} holds text but the model gives no text handling for "
                            f"block {block!r}; give pre-tokenized ids (a list of integers) or "
                            f"a model adapter with its tokenizer")
        try:
            tokens, cut = encoder.encode_reporting(value)
        except TextError as err:
            raise DataError(f"{field_name}: {err}") from None
        except Exception as err:  # the model's own tokenizer failed
            raise DataError(f"{field_name}: the tokenizer {encoder.name} failed "
                            f"({type(err).__name__}: {err})") from None
        if cut:
            notes.append(f"{block}: text cut to the model's {encoder.max_length} tokens")
        return TokenData(tokens, value, cut), {"text": value}
    if isinstance(value, list) and value and all(
            isinstance(i, int) and not isinstance(i, bool) for i in value):
        return _pretokenized(value, block, field_name, encoder, ctx, notes), {"ids": value}
    allowed = "a text (string) or pre-tokenized ids (a non-empty list of integers)"
    if isinstance(value, list):
        odd = [i for i in value if not isinstance(i, int) or isinstance(i, bool)]
        got = f"a list holding {_kind(odd[0])}" if odd else "an empty list"
        raise DataError(f"{field_name} must be {allowed}, got {got}")
    raise DataError(f"{field_name} must be {allowed}, got {_kind(value)}")


def _pretokenized(ids: list[int], block: str, field_name: str, encoder: TextEncoder | None,
                  ctx: _Context, notes: list[str]) -> TokenData:
    low = min(ids)
    if low < 0:
        raise DataError(f"{field_name}: token id {low} is negative")
    if encoder is None:
        return TokenData(TokenBlock(torch.tensor(ids, dtype=torch.long)))
    bound = ctx.bounds.get(block)
    if bound is None:
        bound = ctx.bounds[block] = _id_bound(encoder)
    high = max(ids)
    if high >= bound:
        raise DataError(f"{field_name}: token id {high} is outside the vocabulary of "
                        f"{encoder.name} (ids 0..{bound - 1})")
    if len(ids) > encoder.max_length:
        if not encoder.truncate:
            raise DataError(f"{field_name}: {len(ids)} token ids, more than the model's maximum "
                            f"length {encoder.max_length} "
                            f"(the model's TextEncoder refuses longer texts; build it with "
                            f"truncate=True to cut them, which the run reports)")
        ids = ids[: encoder.max_length]
        notes.append(f"{block}: ids cut to the model's {encoder.max_length} tokens")
        cut = True
    else:
        cut = False
    attention = [1] * len(ids)
    if encoder.pad_to_max_length:
        pad = encoder.max_length - len(ids)
        ids = ids + [encoder.pad_id] * pad
        attention += [0] * pad
    return TokenData(TokenBlock(torch.tensor(ids, dtype=torch.long), None,
                                torch.tensor(attention, dtype=torch.long)), None, cut)


def _id_bound(encoder: TextEncoder) -> int:
    """One past the largest id the model's text side knows: its noisable ids, padding, mask
    and the special ids it adds around a text."""
    known = [int(encoder.vocabulary.noisable_ids.max()), encoder.pad_id]
    if encoder.vocabulary.mask_id is not None:
        known.append(encoder.vocabulary.mask_id)
    with contextlib.suppress(Exception):  # a tokenizer may refuse an empty text
        known += [int(i) for i in encoder.encode_ids("")]
    return max(known) + 1


def _image(value, block: str, column: str, row: RawRow, where: str, ctx: _Context,
           notes: list[str]) -> tuple[ImageData, dict]:
    processor = ctx.processors[block]
    field_name = f"{where}: column {column!r}"
    path = data = None
    if isinstance(value, dict) and ("bytes" in value or "path" in value):  # HF Image feature
        data, value = value.get("bytes"), value.get("path")
        if data is None and value is None:
            raise DataError(f"{field_name} holds an image with neither bytes nor path")
    if isinstance(data, (bytes, bytearray)):
        data, name = bytes(data), f"{column} of {row.where}"
    elif isinstance(value, str):
        _check_unicode(value, field_name)
        if not value.strip() or "\x00" in value:
            raise DataError(f"{field_name}: image path {value!r} is empty or malformed")
        full = Path(value) if Path(value).is_absolute() else row.base / value
        real, inside = realpath_inside(full, row.base)
        if not inside and not ctx.spec.allow_outside_paths:
            raise DataError(f"{field_name}: image path {value!r} points outside the dataset "
                            f"folder {row.base} (pass --allow-outside-paths to read it)")
        path, name = str(real), value
    elif isinstance(value, (bytes, bytearray)):
        data, name = bytes(value), f"{column} of {row.where}"
    elif isinstance(value, list) and value and _all_numbers(value):
        return _vector(value, field_name, processor)
    else:
        raise DataError(f"{field_name} must be an image path (a string) or an array of "
                        f"numbers, got {_kind(value)}")
    try:
        raw = data if data is not None else read_image_file(path)
        image = decode_image(raw, name, processor.max_pixels)
        _, changes = processor.process(image)
    except ImageError as err:
        raise DataError(f"{field_name}: {err}") from None
    except Exception as err:  # Pillow raises assorted errors on unusual modes
        raise DataError(f"{field_name}: image {name} cannot be processed "
                        f"({type(err).__name__}: {err})") from None
    notes.extend(f"{block}: {change}" for change in changes)
    digest = hashlib.sha256(raw).hexdigest()
    return ImageData(processor, digest, name, path, data), {"image_sha256": digest}


def _all_numbers(value) -> bool:
    if isinstance(value, list):
        return all(_all_numbers(x) for x in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _vector(value: list, field_name: str, processor: ImageProcessor
            ) -> tuple[VectorData, dict]:
    """A continuous block written as (nested) lists of numbers: taken as it is (float32); if
    the model states an image size, the array must already be ``(channels, height, width)``
    of that size (nothing is resized)."""
    import numpy as np

    try:
        array = np.asarray(value, dtype=np.float64)
    except ValueError:
        raise DataError(f"{field_name}: the array is ragged (rows of different lengths)") \
            from None
    if not np.isfinite(array).all():
        raise DataError(f"{field_name}: the array holds NaN or infinite values")
    if processor.size is not None:
        channels = 3 if processor.mode == "RGB" else 1
        if array.shape != (channels, *processor.size):
            raise DataError(f"{field_name}: an array of shape {array.shape} given where the "
                            f"model takes images of shape {(channels, *processor.size)}")
    tensor = torch.from_numpy(array.astype(np.float32))
    digest = hashlib.sha256(tensor.numpy().tobytes() + str(tuple(tensor.shape)).encode())
    return VectorData(tensor), {"vector_sha256": digest.hexdigest()}


def _check_unicode(value: str, field_name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(f"{field_name} holds a lone surrogate {value[err.start]!r} at "
                        f"character {err.start} (not valid Unicode)") from None


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _kind_of_note(note: str) -> str:
    return re.sub(r"\d+", "N", note)
