"""How a text becomes the ids of one token block: the model side's tokenizer, its noisable
ids (whose count is the certificate's ``V``), padding and maximum length.

The model side owns this (an adapter, an entry point, a checkpoint): hybridcert never falls
back to another model's tokenizer.  Three ways to build one:

* :meth:`TextEncoder.from_hf` — a Hugging Face ``transformers`` tokenizer;
* :meth:`TextEncoder.from_tokenizers` — a ``tokenizers.Tokenizer`` (e.g. a tokenizer.json);
* the constructor — any callable ``text -> list[int]`` plus the noisable ids.

User text is data, never control: the two builders tokenize it with special-token parsing
off (a caption holding ``<image>``, ``[SEP]`` or ``<|im_end|>`` is read as those characters),
add the model's own special tokens around it, and refuse a text that would still yield a
special id (a tokenizer whose specials are ordinary words of its vocabulary).  The unknown
token is data (an unknown word).  A constructor-built encoder is the caller's to make so;
:func:`check_user_ids` is the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hybridcert._validation import check_count
from hybridcert.blocks.tokens import TokenBlock, Vocabulary


class TextError(ValueError):
    """A text that the encoder cannot turn into ids without a silent change."""


def check_user_ids(ids: Sequence[int], forbidden: set[int] | frozenset[int],
                   name: str = "tokenizer", describe: Callable[[int], str] | None = None) -> None:
    """Raise :class:`TextError` if the ids of a user's text hold a control id.

    Parameters
    ----------
    ids : sequence of int
        The user's text alone, tokenized with special-token parsing off and no specials added.
    forbidden : set of int
        The ids no user text may yield: the tokenizer's special ids (image placeholders, chat
        markers, separators), the unknown token excepted.
    name : str
        The tokenizer's name, for the message.
    describe : callable, optional
        ``id -> token string``, for the message.
    """
    for i in ids:
        if int(i) in forbidden:
            token = f" ({describe(int(i))!r})" if describe is not None else ""
            raise TextError(f"text yields the special id {int(i)}{token} of {name} even with "
                            f"special-token parsing off; user text is data, never a control "
                            f"token: remove or rewrite that part of the text")


@dataclass(frozen=True)
class TextEncoder:
    """Text -> :class:`TokenBlock` for one token block of a model.

    Parameters
    ----------
    encode_ids : callable
        ``text -> sequence of int``: the model's ids *with* its special tokens.
    vocabulary : Vocabulary
        The ids the noise may draw (specials and padding excluded); ``V = vocabulary.size``.
    pad_id : int
        Id used to pad a text to ``max_length``.
    max_length : int
        The model's maximum sequence length.
    pad_to_max_length : bool
        Pad every text to ``max_length`` (so records batch together), attention 0 over padding.
    truncate : bool
        Texts longer than ``max_length``: refuse (False, default) or cut at ``max_length``
        (True; the run reports how many texts were cut).
    name : str
        Shown in errors and run reports (e.g. the tokenizer's name).
    special_tokens : tuple of str
        The tokenizer's special-token strings (``"[SEP]"``, ``"<image>"``): ``hybridcert
        inspect`` warns when a user's text contains one.  Filled by the builders.
    id_to_token : callable, optional
        ``id -> token string``, to show a text as the model's tokens (``hybridcert inspect``);
        filled by the builders, ids are shown as numbers without it.
    """

    encode_ids: Callable[[str], Sequence[int]]
    vocabulary: Vocabulary
    pad_id: int
    max_length: int
    pad_to_max_length: bool = True
    truncate: bool = False
    name: str = "tokenizer"
    special_tokens: tuple[str, ...] = ()
    id_to_token: Callable[[int], str] | None = None

    def __post_init__(self) -> None:
        check_count("max_length", self.max_length, minimum=1)
        check_count("pad_id", self.pad_id, minimum=0)
        if bool(self.vocabulary.contains(torch.tensor([self.pad_id]))[0]):
            raise ValueError(f"pad_id {self.pad_id} is among the noisable ids: padding must "
                             f"never be noised")

    @property
    def vocab_size(self) -> int:
        return self.vocabulary.size

    def encode(self, text: str) -> TokenBlock:
        """Ids (padded if asked), attention 0 over padding.  Raises :class:`TextError` for a
        text that is not a string, encodes to no ids at all, is too long (unless
        ``truncate``) or yields a special id from the user's text (builders' check).  A text
        whose ids hold no noisable token (e.g. only the model's specials around an empty
        string) is encoded; a run refuses it before it starts
        (:func:`hybridcert.runs.runner.check_rows`, unless ``allow_empty_text``)."""
        return self.encode_reporting(text)[0]

    def encode_reporting(self, text: str) -> tuple[TokenBlock, bool]:
        """:meth:`encode`, and whether the text was cut to ``max_length``."""
        if not isinstance(text, str):
            raise TextError(f"text must be a string, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise TextError("text holds a lone surrogate (not valid Unicode)") from None
        ids = [int(i) for i in self.encode_ids(text)]
        cut = len(ids) > self.max_length
        if cut and not self.truncate:
            raise TextError(f"text has {len(ids)} tokens, more than the model's maximum "
                            f"length {self.max_length} (build the TextEncoder with "
                            f"truncate=True to cut it)")
        ids = ids[: self.max_length]
        if not ids:
            raise TextError("text encodes to no tokens")
        attention = [1] * len(ids)
        if self.pad_to_max_length:
            pad = self.max_length - len(ids)
            ids += [self.pad_id] * pad
            attention += [0] * pad
        block = TokenBlock(torch.tensor(ids, dtype=torch.long), None,
                           torch.tensor(attention, dtype=torch.long))
        return block, cut

    def token_id(self, token: str) -> int:
        """The single id that ``token`` encodes to (specials stripped); for placeholders."""
        ids = [i for i in self.encode_ids(token)
               if bool(self.vocabulary.contains(torch.tensor([int(i)]))[0])]
        if len(ids) != 1:
            raise ValueError(f"{token!r} is not a single noisable token of {self.name} "
                             f"(it encodes to {len(ids)} noisable ids)")
        return int(ids[0])

    def describe(self) -> dict:
        return {"tokenizer": self.name, "vocab_size": self.vocab_size, "pad_id": self.pad_id,
                "max_length": self.max_length, "truncate": self.truncate}

    # -- builders ------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, tokenizer, max_length: int | None = None, *, truncate: bool = False,
                noisable_ids: Sequence[int] | None = None) -> TextEncoder:
        """From a ``transformers`` tokenizer: its special ids (named, and every added token
        marked special) and padding are never noised, and never come from the user's text
        (``split_special_tokens``; see the module's docstring).

        ``max_length`` defaults to ``tokenizer.model_max_length`` when that is a real limit.
        """
        limit = max_length or getattr(tokenizer, "model_max_length", None)
        if limit is None or limit > 1_000_000:
            raise ValueError("max_length is required: the tokenizer states no maximum length")
        pad = tokenizer.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no pad token: give it one "
                             "(tokenizer.pad_token = ...) or build TextEncoder directly")
        from hybridcert.adapters.hf import special_ids

        special = special_ids(tokenizer)      # named specials and every added special token
        if noisable_ids is None:
            noisable_ids = [i for i in range(len(tokenizer)) if i not in special]
        mask = getattr(tokenizer, "mask_token_id", None)
        vocab = Vocabulary(torch.tensor(list(noisable_ids)), mask_id=mask)
        forbidden = special - {getattr(tokenizer, "unk_token_id", None)}
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__

        def encode_ids(text: str) -> list[int]:
            # special-token parsing off for the user's text; the model's own specials added
            user = tokenizer(text, add_special_tokens=False,
                             split_special_tokens=True)["input_ids"]
            check_user_ids(user, forbidden, name, tokenizer.convert_ids_to_tokens)
            return tokenizer(text, add_special_tokens=True,
                             split_special_tokens=True)["input_ids"]

        return cls(encode_ids, vocab, int(pad), int(limit), truncate=truncate, name=name,
                   special_tokens=hf_special_tokens(tokenizer),
                   id_to_token=hf_id_to_token(tokenizer))

    @classmethod
    def from_tokenizers(cls, tokenizer, max_length: int, *, pad_id: int,
                        special_ids: Sequence[int] = (), mask_id: int | None = None,
                        noisable_ids: Sequence[int] | None = None, truncate: bool = False,
                        name: str = "tokenizers") -> TextEncoder:
        """From a ``tokenizers.Tokenizer``; its own padding/truncation settings are ignored
        (the encoder pads and checks the length itself).  Added special tokens in the user's
        text are not matched (``encode_special_tokens``); a text that still yields one of
        ``special_ids`` (other than the model's unknown token) is refused."""
        import copy

        tok = copy.deepcopy(tokenizer)
        tok.no_padding()
        tok.no_truncation()
        tok.encode_special_tokens = True
        special = set(int(i) for i in special_ids) | {int(pad_id)}
        special |= {int(i) for i, t in tok.get_added_tokens_decoder().items() if t.special}
        if mask_id is not None:
            special.add(int(mask_id))
        if noisable_ids is None:
            noisable_ids = [i for i in range(tok.get_vocab_size()) if i not in special]
        vocab = Vocabulary(torch.tensor(list(noisable_ids)), mask_id=mask_id)
        strings = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
        strings |= {s for i in special if (s := tok.id_to_token(i)) is not None}
        unk = getattr(tok.model, "unk_token", None)
        forbidden = special - {tok.token_to_id(unk) if unk else None}

        def encode_ids(text: str) -> list[int]:
            encoding = tok.encode(text)
            user = [i for i, s in zip(encoding.ids, encoding.special_tokens_mask, strict=True)
                    if not s]     # the post-processor's own specials are the model's
            check_user_ids(user, forbidden, name, tok.id_to_token)
            return encoding.ids

        return cls(encode_ids, vocab, int(pad_id), max_length, truncate=truncate, name=name,
                   special_tokens=tuple(sorted(strings)), id_to_token=tok.id_to_token)


def hf_special_tokens(tokenizer) -> tuple[str, ...]:
    """The special-token strings of a ``transformers`` tokenizer: its named specials and every
    added token marked special."""
    strings = {str(t) for t in getattr(tokenizer, "all_special_tokens", ())}
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    strings |= {str(t.content) for t in decoder.values() if getattr(t, "special", False)}
    return tuple(sorted(s for s in strings if s))


def hf_id_to_token(tokenizer) -> Callable[[int], str] | None:
    """``id -> token string`` of a ``transformers`` tokenizer (None if it has no such map)."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    return None if convert is None else (lambda i: str(convert(int(i))))
