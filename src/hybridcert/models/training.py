"""Noise-augmented training: the certification noise objects, drawn fresh for every batch."""

from __future__ import annotations

import time

import torch

from hybridcert.data.safety import SafetyData, vocabulary
from hybridcert.models.fusion import FilterConfig, SafetyFilter
from hybridcert.noise import Gaussian, Substitution
from hybridcert.blocks import HybridNoise


def noises_for(config: FilterConfig) -> dict:
    """The hybrid noise of a model: Gaussian on the image, substitution on the text."""
    out = {}
    if "image" in config.modalities:
        out["image"] = Gaussian(config.sigma)
    if "text" in config.modalities:
        out["text"] = Substitution(config.keep_prob, vocabulary().size)
    return out


def train(config: FilterConfig, train_data: SafetyData, epochs: int = 8, batch_size: int = 128,
          lr: float = 3e-3, log=print, embeddings: torch.Tensor | None = None) -> SafetyFilter:
    torch.manual_seed(config.seed)
    model = SafetyFilter(config, embeddings)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * ((len(train_data) + batch_size - 1)
                                                    // batch_size))
    generator = torch.Generator().manual_seed(config.seed + 1)
    hybrid = HybridNoise.from_noises(noises_for(config), {"text": vocabulary()})
    images, tokens = torch.from_numpy(train_data.images), torch.from_numpy(train_data.tokens)
    labels = torch.from_numpy(train_data.labels)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        start, total, correct = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train_data), generator=generator)
        model.train()
        for begin in range(0, len(order), batch_size):
            idx = order[begin: begin + batch_size]
            batch = hybrid.noise_batch({"image": images[idx], "text": tokens[idx]}, generator)
            logits = model(batch)
            loss = loss_fn(logits, labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(order):.3f}, noisy train accuracy "
            f"{correct / len(order):.3f} ({time.perf_counter() - start:.1f} s)")
    config.epochs = epochs
    return model.eval()


@torch.no_grad()
def accuracy(model: SafetyFilter, data: SafetyData, noisy: bool = False, seed: int = 0) -> float:
    generator = torch.Generator().manual_seed(seed)
    hybrid = HybridNoise.from_noises(noises_for(model.config) if noisy else {},
                                     {"text": vocabulary()})
    correct = 0
    for begin in range(0, len(data), 512):
        sl = slice(begin, begin + 512)
        batch = hybrid.noise_batch({"image": torch.from_numpy(data.images[sl]),
                                    "text": torch.from_numpy(data.tokens[sl])}, generator)
        correct += int((model(batch).argmax(1).numpy() == data.labels[sl]).sum())
    return correct / len(data)


def evaluate(model, data: SafetyData) -> dict:
    return {"clean_accuracy": accuracy(model, data), "noisy_accuracy": accuracy(model, data, True)}


__all__ = ["accuracy", "evaluate", "noises_for", "train"]
