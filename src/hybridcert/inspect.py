"""What a certificate is about, input by input: ``hybridcert inspect``.

For each row of a dataset, as ``hybridcert certify`` would see it (the same configuration, the
same model side, the same validated items, the same threat applied by
:meth:`~hybridcert.blocks.HybridNoise.prepare`): the ids the model receives with the positions
the noise touches (and an adversary may change), specials and padding shown apart, ``V`` of
each token block, appended slots, the image size before and after the model's processor and
the space the L2 ball lives in, the notes the data checks attach, and warnings where the
certificate covers less than a reader may assume.

Nothing is certified, the model is not called and no store is written: the batch the model
would receive is reported from one noisy copy drawn by the run's noise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hybridcert.blocks import Append, Suffix, TokenBlock, Tokens
from hybridcert.runs.config import ConfigError, RunConfig

#: Roles of a token position, as shown and in ``--json``.
ROLES = ("noised", "slot", "text", "special", "padding")


@dataclass
class Token:
    """One position of a token block: ``role`` is ``noised`` (the noise draws it and an
    adversary may change it), ``slot`` (an appended slot: noised), ``text`` (the text's own
    token, not noised under this threat or noise), ``special`` (an id outside the noisable
    vocabulary: never noised) or ``padding`` (not attended)."""

    position: int
    id: int
    token: str
    role: str


@dataclass
class TokenView:
    """A token block of one row, as the model receives it."""

    name: str
    noise: str
    threat: dict
    vocab_size: int | None
    max_length: int | None
    length: int
    attended: int
    content: int
    noised: int
    slots: dict | None
    truncated: bool
    text: str | None
    special_strings: list[str]
    special_ids: list[int]
    unnoisable_ids: list[int]
    tokens: list[Token] = field(repr=False)
    kind: str = "tokens"

    def shown(self) -> str:
        """The block in one line: ``*tok*`` noised, ``+tok+`` appended slot, ``{tok}`` special,
        plain: the text's own tokens not noised; runs of padding as ``<pad xN>``."""
        return " ".join(text for text, _ in self.segments())

    def segments(self) -> list[tuple[str, str]]:
        """``(shown token, role)`` pairs of :meth:`shown` (for colouring)."""
        out, padding = [], 0
        for tok in self.tokens:
            if tok.role == "padding":
                padding += 1
                continue
            if padding:
                out.append((f"<pad x{padding}>", "padding"))
                padding = 0
            out.append(({"noised": "*{}*", "slot": "+{}+", "special": "{{{}}}",
                         "text": "{}"}[tok.role].format(tok.token), tok.role))
        if padding:
            out.append((f"<pad x{padding}>", "padding"))
        return out


@dataclass
class ImageView:
    """A continuous block of one row (an image, or numbers given in the row)."""

    name: str
    noise: str
    source: dict | None
    shape: list[int]
    processor: dict | None
    l2_space: str
    kind: str = "continuous"


@dataclass
class RowView:
    """One input: what the model receives and what the certificate is about."""

    id: str
    index: int
    where: str
    label: int | None
    notes: list[str]
    blocks: list[TokenView | ImageView]
    batch: dict[str, dict]
    warnings: list[str]
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """One line's worth: per block its sizes, and the number of notes and warnings."""
        blocks = {}
        for b in self.blocks:
            if isinstance(b, TokenView):
                blocks[b.name] = {"noise": b.noise, "attended": b.attended,
                                  "noised": b.noised, "vocab_size": b.vocab_size}
            else:
                blocks[b.name] = {"noise": b.noise, "shape": b.shape,
                                  "source": b.source}
        return {"id": self.id, "label": self.label, "blocks": blocks,
                "notes": len(self.notes), "warnings": list(self.warnings),
                "error": self.error}


@dataclass
class Inspection:
    """The rows of a run, and what is common to them (model, blocks, threat)."""

    model: str
    blocks: list[dict]
    rows: list[RowView]
    dataset: dict[str, Any] = field(default_factory=dict)
    context: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model, "blocks": self.blocks, "dataset": self.dataset,
                "context": self.context, "rows": [r.to_dict() for r in self.rows]}

    @property
    def warnings(self) -> int:
        return sum(len(r.warnings) for r in self.rows)


def inspect_rows(config: RunConfig | Mapping, rows: Sequence[str] | None = None, *,
                 adapter=None) -> Inspection:
    """Every row (or the rows with ids ``rows``) as ``certify`` would see it.

    Parameters
    ----------
    config : RunConfig or dict
        The run's configuration (a dict is read like a TOML file:
        :meth:`RunConfig.from_dict`).  Only the data, model, noise and threat options matter.
    rows : sequence of str, optional
        Ids of the rows to show (default: all, in dataset order).
    adapter : ModelAdapter, optional
        The model side, instead of loading ``config.model`` (as :func:`hybridcert.runs.runner.
        plan` takes it).

    Returns
    -------
    Inspection
        ``.rows``: a :class:`RowView` per row.

    Raises
    ------
    ConfigError, DataError
        The same one-line errors as ``certify`` (and an id in ``rows`` that no row has).
    """
    from hybridcert.datasets.spec import DataError
    from hybridcert.runs.runner import load_items, plan

    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(dict(config))
    run = plan(config, adapter=adapter)
    try:
        items = load_items(run)
    except DataError as err:
        raise ConfigError(str(err)) from None
    if rows:
        by_id = {item.input_id: item for item in items}
        unknown = [r for r in rows if r not in by_id]
        if unknown:
            shown = ", ".join(repr(i) for i in list(by_id)[:5]) + (" ..." if len(by_id) > 5
                                                                   else "")
            raise ConfigError(f"--row {unknown[0]!r} is not an id of the dataset (its ids: "
                              f"{shown})")
        items = [by_id[r] for r in dict.fromkeys(rows)]
    views = [_row(run, item) for item in items]
    return Inspection(run.adapter.name, run.noise.describe(), views,
                      {"source": config.dataset, "rows": len(views)}, _context(run.adapter))


def _context(adapter) -> list[str]:
    """What the model adds around the blocks (a guard's prompt), in words."""
    from hybridcert.adapters.vlm_guard import GuardClassifier

    model = adapter.model
    if isinstance(model, GuardClassifier):
        return [f"the model places block {model.text_block!r} inside its chat prompt: "
                f"{model.prefix.numel()} prompt ids before it (policy, image tokens) and "
                f"{model.suffix.numel()} after it (the assistant turn); only the block is "
                f"noised, the prompt never"]
    return []


def _row(run, item) -> RowView:
    notes = list(item.notes)
    try:
        record = item.record()
        prepared = run.noise.prepare(record)
    except ValueError as err:     # e.g. appended slots past the model's maximum length
        return RowView(item.input_id, item.idx, item.where, item.label, notes, [], {},
                       [f"certify fails on this row: {err}"], str(err))
    blocks, warnings = [], []
    for name, data in prepared.items():
        spec = run.noise.by_name.get(name)
        if isinstance(data, TokenBlock):
            view = _tokens(name, data, spec, run.adapter.text.get(name), item.blocks.get(name))
            warnings += _token_warnings(view, spec)
        else:
            view = _continuous(name, data, spec, item)
            if view.noise == "none":
                warnings.append(f"{name}: not noised, so the certificate assumes this block "
                                f"unchanged (any change of it is outside the certificate)")
        blocks.append(view)
    with torch.no_grad():
        batch = run.noise.sample(prepared, 1, torch.Generator().manual_seed(0))
    shapes = {key: {"shape": ["B", *list(t.shape[1:])], "dtype": str(t.dtype).replace(
        "torch.", "")} for key, t in batch.items()}
    return RowView(item.input_id, item.idx, item.where, item.label, notes, blocks, shapes,
                   warnings)


def _noise_spec(spec) -> str:
    noise = getattr(spec, "noise", None)
    return "none" if noise is None else noise.spec()


def _tokens(name: str, block: TokenBlock, spec: Tokens | None, encoder, data) -> TokenView:
    ids = block.ids.tolist()
    attention = [1] * len(ids) if block.attention is None else block.attention.tolist()
    noisable = block.noisable.tolist()
    vocabulary = spec.vocabulary if spec is not None and spec.vocabulary is not None else \
        (encoder.vocabulary if encoder is not None else None)
    # Without a vocabulary (pre-tokenized ids of a model with no text handling) no id can
    # be told apart as special: all are shown as text.
    in_vocab = [True] * len(ids) if vocabulary is None else \
        vocabulary.contains(block.ids).tolist()
    append = spec is not None and spec.noise is not None and isinstance(spec.threat, Append)
    name_of = encoder.id_to_token if encoder is not None and encoder.id_to_token else str
    tokens = []
    for pos, (i, att, noised, known) in enumerate(zip(ids, attention, noisable, in_vocab,
                                                       strict=True)):
        if not att:
            role = "padding"
        elif noised:
            role = "slot" if append else "noised"
        elif known:
            role = "text"
        else:
            role = "special"
        tokens.append(Token(pos, int(i), _token_string(name_of, i), role))
    slots = None
    if append:
        at = [t.position for t in tokens if t.role == "slot"]
        after = next((t for t in tokens[at[-1] + 1:] if t.role != "padding"), None)
        slots = {"count": len(at), "at": at[0], "placeholder": tokens[at[0]].token,
                 "placeholder_id": spec.threat.placeholder_id,
                 "before": None if after is None else after.token}
    original = data.block if data is not None and hasattr(data, "block") else block
    text = getattr(data, "text", None)
    strings, extra, unnoisable = _specials(text, original, encoder, vocabulary)
    content = sum(1 for t in tokens if t.role in ("noised", "text"))
    noise = spec.noise if spec is not None else None
    return TokenView(
        name=name, noise=_noise_spec(spec), threat=spec.threat.describe() if spec is not None
        and noise is not None else {"threat": None},
        vocab_size=None if noise is None else noise.describe().get("vocab_size"),
        max_length=None if encoder is None else encoder.max_length, length=len(ids),
        attended=sum(1 for a in attention if a), content=content,
        noised=sum(1 for n in noisable if n), slots=slots,
        truncated=bool(getattr(data, "cut", False)), text=text,
        special_strings=strings, special_ids=extra, unnoisable_ids=unnoisable, tokens=tokens)


def _token_string(name_of, i: int) -> str:
    try:
        out = name_of(int(i))
    except Exception:  # the tokenizer's own lookup failed: show the id
        out = None
    return str(i) if out is None else str(out)


def _specials(text: str | None, block: TokenBlock, encoder, vocabulary
              ) -> tuple[list[str], list[int], list[int]]:
    """Special-token strings found in the raw text; the ids outside the noisable vocabulary
    that the text brought (beyond those the encoder adds around any text, i.e. around an
    empty one), split into special ids whose string is in the text and the others (an
    unknown word's [UNK], or ids without a known string)."""
    strings = [] if text is None or encoder is None else \
        sorted(s for s in encoder.special_tokens if s and s in text)
    if vocabulary is None or encoder is None:
        return strings, [], []
    attention = torch.ones_like(block.ids) if block.attention is None else block.attention
    outside = (~vocabulary.contains(block.ids)) & (attention != 0)
    found = Counter(int(i) for i in block.ids[outside].tolist())
    try:
        empty = torch.tensor([int(i) for i in encoder.encode_ids("")], dtype=torch.long)
        added = Counter(int(i) for i in empty[~vocabulary.contains(empty)].tolist()) \
            if empty.numel() else Counter()
    except Exception:  # a tokenizer may refuse an empty text: count the ends as added
        attended = block.ids[attention != 0].tolist()
        added = Counter(i for i in (attended[:1] + attended[-1:]) if found[int(i)])
    extra = sorted((found - added).elements())
    named = [i for i in extra if text is not None and encoder.id_to_token is not None
             and _token_string(encoder.id_to_token, i) in text]
    return strings, named, [i for i in extra if i not in named]


def _token_warnings(view: TokenView, spec: Tokens | None) -> list[str]:
    name, out = view.name, []
    if view.noise == "none":
        out.append(f"{name}: not noised, so the certificate assumes this text unchanged (any "
                   f"token change is outside the certificate)")
    elif view.noised == 0:
        out.append(f"{name}: no noisable position (the text has no token the noise may draw), "
                   f"so the certificate covers the other blocks only; any change of this text "
                   f"is outside it")
    if view.truncated:
        out.append(f"{name}: the text was cut to the model's {view.max_length} tokens; the "
                   f"rest is neither seen by the model nor covered by the certificate")
    if view.special_strings or view.special_ids:
        found = ", ".join(repr(s) for s in view.special_strings) or \
            ", ".join(f"id {i}" for i in view.special_ids)
        how = (f"encoded as special id(s) {view.special_ids}: control tokens from user data, "
               f"never noised") if view.special_ids else "encoded as ordinary text"
        out.append(f"{name}: the user's text contains special token(s) {found} ({how})")
    if view.unnoisable_ids and view.noise != "none":
        out.append(f"{name}: {len(view.unnoisable_ids)} position(s) of the text hold ids "
                   f"outside the noisable vocabulary {sorted(set(view.unnoisable_ids))} "
                   f"(e.g. an unknown word's [UNK]): never noised, and a change there is "
                   f"outside the certificate")
    if spec is not None and spec.noise is not None:
        if isinstance(spec.threat, Suffix) and view.content > view.noised:
            out.append(f"{name}: threat suffix noises only the last {view.noised} of "
                       f"{view.content} content tokens; a change of the first "
                       f"{view.content - view.noised} is outside the certificate")
        if isinstance(spec.threat, Append):
            out.append(f"{name}: threat append noises only the {view.noised} appended slot(s); "
                       f"the text's own {view.content} token(s) are assumed unchanged")
    return out


def _continuous(name: str, tensor: torch.Tensor, spec, item) -> ImageView:
    from hybridcert.datasets.items import ImageData

    data = item.blocks.get(name)
    shape = list(tensor.shape)
    source = processor = None
    if isinstance(data, ImageData):
        image = data.decode(item.where)
        source = {"width": image.width, "height": image.height, "mode": image.mode}
        processor = data.processor.describe()
        space = data.processor.space    # the processor's own words, as `certify` prints them
    else:
        space = f"the block's numbers as given, shape {tuple(shape)} (nothing resized)"
    return ImageView(name, _noise_spec(spec), source, shape, processor, space)
