"""The blocks of a record: specs, text handling, threat models and the hybrid noise that owns
them (see :class:`HybridNoise`)."""

from hybridcert.blocks.hybrid import CertifiedRegion, Continuous, HybridNoise, Record, Tokens
from hybridcert.blocks.text import TextEncoder, TextError
from hybridcert.blocks.threats import Anywhere, Append, Suffix, Threat
from hybridcert.blocks.tokens import TokenBlock, Vocabulary

__all__ = ["Anywhere", "Append", "CertifiedRegion", "Continuous", "HybridNoise", "Record",
           "Suffix", "TextEncoder", "TextError", "Threat", "TokenBlock", "Tokens", "Vocabulary"]
