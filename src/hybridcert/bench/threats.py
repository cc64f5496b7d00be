"""The benchmark's threat models: the certified grid, the two token threats and the
smoothing noise of a (sigma, keep) level under each."""

from __future__ import annotations

from hybridcert.blocks import Append, Continuous, HybridNoise, Tokens
from hybridcert.datasets import safety
from hybridcert.noise import Gaussian, Substitution
from hybridcert.reports.tables import EPS_GRID, TOKEN_GRID

#: The 25 grid cells (eps, r), row-major: eps in EPS_GRID, r in TOKEN_GRID.
CELLS = [(float(e), int(r)) for e in EPS_GRID for r in TOKEN_GRID]
#: Appended slots hold "." before noising (a noisable id that marks no class).
APPEND_PLACEHOLDER = 1012
THREATS = ("anywhere", "append")


def noise_for(level: tuple[float, float], threat: str, slots: int = 8,
              image: bool = True, text: bool = True) -> HybridNoise:
    """The smoothing noise of a level under a threat model; ``image=False`` / ``text=False``
    leave that block un-noised (text-only / image-only smoothing)."""
    sigma, keep = level
    vocab = safety.vocabulary()
    threat_model = Append(slots, APPEND_PLACEHOLDER) if threat == "append" else None
    tokens = Tokens("text", Substitution(keep, vocab.size) if text else None, vocab,
                    **({"threat": threat_model} if threat_model else {}),
                    max_length=safety.CAPTION_LENGTH + slots if threat == "append" else None)
    return HybridNoise([Continuous("image", Gaussian(sigma) if image else None), tokens])


def branch_noise(level: tuple[float, float], modality: str) -> HybridNoise:
    """The noise of one branch of the factorized AND, which reads one modality: the image
    branch's Gaussian at the level's sigma, the text branch's substitution at its keep."""
    sigma, keep = level
    if modality == "image":
        return HybridNoise([Continuous("image", Gaussian(sigma))])
    if modality == "text":
        vocab = safety.vocabulary()
        return HybridNoise([Tokens("text", Substitution(keep, vocab.size), vocab)])
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
