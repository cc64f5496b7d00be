"""The interface every noise type implements (compare scipy.stats' uniform methods)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch

from hybridcert.noise.ratio import LikelihoodRatio

#: The noise registry: name (``gaussian:0.25`` on the command line, the key of
#: :meth:`Noise.describe` in the store) -> class.  A subclass with a ``name`` registers itself.
NOISES: dict[str, type[Noise]] = {}


class Noise(ABC):
    """A smoothing distribution for one input block.

    Two methods are all the rest of the library uses: :meth:`sample` draws noisy copies
    (for training and Monte Carlo certification alike) and :meth:`likelihood_ratio`
    describes, for a perturbation of a given size, the regions the certificate needs.
    Its name, level and description (:meth:`describe`, :meth:`from_spec`, :meth:`build`)
    are the one place where a noise's name and parameters are spelled out.
    """

    #: ``"continuous"`` (real arrays) or ``"discrete"`` (token indices).
    kind: str
    #: Registry name (``gaussian``, ``substitution``, ``mask``).
    name: str = ""
    #: What its one number is called in messages (``sigma``, ``keep probability``).
    level_name: str = "level"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            NOISES[cls.name] = cls

    @property
    @abstractmethod
    def level(self) -> float:
        """Its one parameter: sigma, or the keep probability."""

    @classmethod
    def check_level(cls, value: float) -> float:
        """Refuse a level this noise can never take (ValueError naming it)."""
        return float(value)

    @classmethod
    def build(cls, level: float, vocab_size: int | None = None) -> Noise:
        """The noise at ``level`` for a block of ``vocab_size`` noisable values (token
        blocks)."""
        return cls(level)

    def describe(self) -> dict:
        """JSON-ready: ``{name: level}`` (and what else :meth:`from_spec` needs)."""
        return {self.name: self.level}

    @classmethod
    def from_spec(cls, spec: Mapping) -> Noise:
        """Inverse of :meth:`describe`."""
        return cls.build(spec[cls.name])

    def spec(self) -> str:
        """The short form ``name:level`` (``--block image=gaussian:0.25``)."""
        return f"{self.name}:{self.level:g}"

    def check_block(self, block: str, vocabulary) -> None:
        """Refuse a token block this noise cannot noise (``vocabulary``: its Vocabulary)."""
        return None

    @abstractmethod
    def sample(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        where: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw one noisy copy of every row of ``x``.

        Parameters
        ----------
        x : Tensor
            Clean input batch; noise is drawn independently per element.
        generator : torch.Generator, optional
            Source of randomness (on ``x``'s device); seeded generators reproduce runs.
        where : bool Tensor, optional
            Broadcastable to ``x``; elements where it is False are left untouched
            (padding and special tokens, which the threat model does not attack either).
        """

    @abstractmethod
    def likelihood_ratio(self, size: float) -> LikelihoodRatio:
        """Likelihood-ratio regions for the worst perturbation of the given size."""
