"""hybridcert: joint robustness certificates for multimodal classifiers by hybrid
randomized smoothing (Gaussian noise on continuous blocks, substitution or masking on
discrete blocks, one Neyman–Pearson certificate).

The names below are imported on first use, so that light parts (the run store, the command
line's argument checks) start without loading torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Frontier": "hybridcert.certificate",
    "Rule": "hybridcert.certificate",
    "certified_frontier": "hybridcert.certificate",
    "certified_gamma": "hybridcert.certificate",
    "frontier_grid": "hybridcert.certificate",
    "threshold_probability": "hybridcert.certificate",
    "is_certified": "hybridcert.certificate",
    "lower_bound": "hybridcert.certificate",
    "per_modality_check": "hybridcert.certificate",
    "sequential_bound": "hybridcert.certificate",
    "upper_bound": "hybridcert.certificate",
    "Gaussian": "hybridcert.noise",
    "LikelihoodRatio": "hybridcert.noise",
    "Mask": "hybridcert.noise",
    "Substitution": "hybridcert.noise",
    "product": "hybridcert.noise",
    "HybridNoise": "hybridcert.blocks",
    "Continuous": "hybridcert.blocks",
    "Tokens": "hybridcert.blocks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hybridcert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
