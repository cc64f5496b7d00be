"""Text threat models as data: which positions of a token block are noised and attackable.

Noise and threat act on the same positions (docs/THEORY.md): the certificate for ``d``
changed positions among the noised ones is the substitution certificate for ``d``, so a
threat model is fully described by the set of positions it noises (and, for appended
slots, how the text is extended).  Positions outside that set are assumed untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridcert._validation import check_count
from hybridcert.blocks.tokens import TokenBlock, Vocabulary


def content_positions(block: TokenBlock, vocabulary: Vocabulary) -> torch.Tensor:
    """Positions holding noisable ids that the model attends to (not padding or specials)."""
    attended = torch.ones_like(block.ids, dtype=torch.bool) if block.attention is None \
        else block.attention.bool()
    return vocabulary.contains(block.ids) & attended


@dataclass(frozen=True)
class Anywhere:
    """Substitution anywhere among the noisable positions (every content token)."""

    name = "substitute"

    def apply(self, block: TokenBlock, vocabulary: Vocabulary) -> TokenBlock:
        noisable = block.noisable if block.noisable is not None else \
            content_positions(block, vocabulary)
        return TokenBlock(block.ids, noisable, block.attention)

    def describe(self) -> dict:
        return {"threat": self.name}


@dataclass(frozen=True)
class Suffix:
    """In-place suffix: only the last ``length`` content tokens are noised and attackable
    (a text shorter than that is noised and attackable everywhere).

    Parameters
    ----------
    length : int
        The widest suffix certified, ``D >= 1``; every ``d <= D`` is certified from the same
        samples.
    """

    length: int
    name = "suffix"

    def __post_init__(self) -> None:
        check_count("suffix length", self.length, minimum=1)

    def apply(self, block: TokenBlock, vocabulary: Vocabulary) -> TokenBlock:
        content = content_positions(block, vocabulary)
        positions = torch.nonzero(content).flatten()
        noisable = torch.zeros_like(content)
        noisable[positions[-self.length:]] = True
        return TokenBlock(block.ids, noisable, block.attention)

    def describe(self) -> dict:
        return {"threat": self.name, "suffix_length": self.length}


@dataclass(frozen=True)
class Append:
    """Append-only: ``slots`` placeholder tokens are appended after the text's last content
    token and noised; the attacker writes into up to ``d <= slots`` of them (a jailbreak-style
    suffix).  The original text is neither noised nor attacked.

    Parameters
    ----------
    slots : int
        Number ``m >= 1`` of appended slots.
    placeholder_id : int
        Model id written into every slot before noising; must be a noisable id.
    """

    slots: int
    placeholder_id: int
    name = "append"

    def __post_init__(self) -> None:
        check_count("append slots", self.slots, minimum=1)
        check_count("placeholder id", self.placeholder_id, minimum=0)

    def apply(self, block: TokenBlock, vocabulary: Vocabulary,
              max_length: int | None = None) -> TokenBlock:
        placeholder = torch.tensor([self.placeholder_id])
        if not bool(vocabulary.contains(placeholder)[0]):
            raise ValueError(f"placeholder id {self.placeholder_id} is not a noisable id of the "
                             f"block's vocabulary")
        ids = block.ids
        attention = torch.ones_like(ids) if block.attention is None else block.attention
        content = content_positions(block, vocabulary)
        attended = int(attention.bool().sum())
        if content.any():
            at = int(torch.nonzero(content).flatten()[-1]) + 1
        else:   # no text: before a trailing special token such as [SEP]
            last = attended - 1
            at = last if last > 0 and not bool(vocabulary.contains(ids[last:last + 1])[0]) \
                else attended
        trailing_pad = ids.numel() - attended
        new_ids = torch.cat([ids[:at], placeholder.repeat(self.slots), ids[at:]])
        new_attention = torch.cat([attention[:at], torch.ones(self.slots,
                                                              dtype=attention.dtype),
                                   attention[at:]])
        if block.attention is not None and trailing_pad >= self.slots:
            new_ids, new_attention = new_ids[: ids.numel()], new_attention[: ids.numel()]
        if max_length is not None and int(new_attention.sum()) > max_length:
            raise ValueError(f"the text has {attended} tokens; with {self.slots} appended slots "
                             f"it exceeds the model's maximum length {max_length}")
        noisable = torch.zeros_like(new_ids, dtype=torch.bool)
        noisable[at: at + self.slots] = True
        return TokenBlock(new_ids, noisable,
                          None if block.attention is None else new_attention)

    def describe(self) -> dict:
        return {"threat": self.name, "append_slots": self.slots,
                "placeholder_id": self.placeholder_id}


Threat = Anywhere | Suffix | Append
