"""Token blocks: the ids of one text, which of them the noise may touch, and the vocabulary
the noise draws from."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hybridcert.noise.discrete import MASK_INDEX


@dataclass(frozen=True)
class Vocabulary:
    """The token ids a discrete noise may draw, and the id that stands for MASK.

    Parameters
    ----------
    noisable_ids : sequence of int
        Model token ids the noise draws from; their count is the certificate's ``V``.
        Ids outside it (padding, [CLS], [SEP]) are never noised nor attacked.
    mask_id : int, optional
        Model id written at masked positions (for :class:`~hybridcert.Mask` noise).
    """

    noisable_ids: torch.Tensor
    mask_id: int | None = None
    _index_of: torch.Tensor = field(init=False, repr=False, compare=False)
    # Copies of the two lookup tables per accelerator, made once: copying them to a GPU for
    # every noise chunk would wait for the model's forward pass queued before it.
    _on_device: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        ids = torch.as_tensor(self.noisable_ids, dtype=torch.long).unique()
        if ids.numel() < 2:
            raise ValueError("noisable_ids must hold at least 2 distinct ids")
        if int(ids.min()) < 0:
            raise ValueError(f"noisable_ids must be >= 0, got {int(ids.min())}")
        if self.mask_id is not None and (isinstance(self.mask_id, bool) or
                                         not isinstance(self.mask_id, int) or self.mask_id < 0):
            raise ValueError(f"mask_id must be an integer id >= 0, got {self.mask_id!r}")
        index_of = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
        index_of[ids] = torch.arange(ids.numel())
        object.__setattr__(self, "noisable_ids", ids)
        object.__setattr__(self, "_index_of", index_of)

    @property
    def size(self) -> int:
        """``V``: the number of ids the noise can draw."""
        return int(self.noisable_ids.numel())

    def contains(self, ids: torch.Tensor) -> torch.Tensor:
        """Which of ``ids`` are noisable."""
        return self.to_indices(ids) >= 0

    def to_indices(self, ids: torch.Tensor) -> torch.Tensor:
        """Noise indices ``0..V-1`` of ``ids``, -1 where an id is not noisable."""
        inside = (ids >= 0) & (ids < self._index_of.numel())
        safe = torch.where(inside, ids, torch.zeros_like(ids))
        return torch.where(inside, self._table("_index_of", ids.device)[safe],
                           torch.full_like(ids, -1))

    def to_ids(self, indices: torch.Tensor, original: torch.Tensor,
               where: torch.Tensor) -> torch.Tensor:
        """Model ids of noise ``indices`` at positions ``where``; MASK becomes ``mask_id``;
        other positions keep ``original``."""
        table = self._table("noisable_ids", indices.device)
        out = torch.where(where & (indices >= 0), table[indices.clamp(min=0)], original)
        masked = where & (indices == MASK_INDEX)
        if self.mask_id is None:           # checked only here: a check is a GPU sync
            if masked.any():
                raise ValueError("Mask noise needs a Vocabulary with mask_id")
            return out
        return torch.where(masked, torch.full_like(out, self.mask_id), out)

    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        table = getattr(self, name)
        if device.type == "cpu":
            return table
        cache = self._on_device.setdefault(device, {})
        if name not in cache:
            cache[name] = table.to(device)
        return cache[name]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_on_device": {}}     # device copies are not pickled


@dataclass(frozen=True)
class TokenBlock:
    """One token sequence of a record.

    Parameters
    ----------
    ids : 1-D LongTensor
        Model token ids, length L >= 1 (special tokens and padding included).
    noisable : 1-D BoolTensor, optional
        Positions the noise touches (and the adversary may change); default: the positions
        the block's threat model selects among ids in the vocabulary and not padding.
    attention : 1-D tensor of 0/1, optional
        The model's attention mask: 0 over padding.  Default: all ones.
    """

    ids: torch.Tensor
    noisable: torch.Tensor | None = None
    attention: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(torch.as_tensor(self.ids).numel())

    @property
    def attended(self) -> int:
        """Positions the model attends to (all of them without an attention mask)."""
        return self.length if self.attention is None else int(self.attention.sum())
