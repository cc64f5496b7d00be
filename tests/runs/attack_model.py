"""A differentiable toy model for ``hybridcert attack`` tests (logits, not labels): class 1
iff ``strength * (mean pixel - 0.5) + 0.5 * (harmful words)`` is positive."""

import torch

from hybridcert.adapters import ModelAdapter
from tests.runs.toy_model import word_encoder


class Scorer(torch.nn.Module):
    def __init__(self, harmful: torch.Tensor, strength: float):
        super().__init__()
        self.harmful, self.strength = harmful, strength

    def forward(self, batch):
        hits = torch.isin(batch["text"], self.harmful) & (batch["text_attention"] > 0)
        score = self.strength * (batch["image"].flatten(1).mean(1) - 0.5) + 0.5 * hits.sum(1)
        return torch.stack([-score, score], dim=1)


def factory(strength: float = 20.0):
    encoder, index = word_encoder()
    harmful = torch.tensor([index["hurt"], index["attack"]])
    return ModelAdapter(Scorer(harmful, strength), text={"text": encoder}, num_classes=2,
                        name="toy-logits")


def labels_factory():
    """Returns labels: there is no gradient to attack with."""
    adapter = factory()
    scorer = adapter.model
    return ModelAdapter(lambda batch: scorer(batch).argmax(1), text=adapter.text,
                        num_classes=2)
