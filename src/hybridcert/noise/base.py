"""The interface every noise type implements (compare scipy.stats' uniform methods)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from hybridcert.noise.ratio import LikelihoodRatio


class Noise(ABC):
    """A smoothing distribution for one input block.

    Two methods are all the rest of the library uses: :meth:`sample` draws noisy copies
    (for training and Monte Carlo certification alike) and :meth:`likelihood_ratio`
    describes, for a perturbation of a given size, the regions the certificate needs.
    """

    #: ``"continuous"`` (real arrays) or ``"discrete"`` (token indices).
    kind: str

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
