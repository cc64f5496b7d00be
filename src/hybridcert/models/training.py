"""Noise-augmented training and evaluation of the safety filter.

Training draws its noise through :meth:`HybridNoise.noise_batch` — the code path that
certification uses — with the same noise levels the model is later certified at.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch

from hybridcert.blocks import Continuous, HybridNoise, Tokens
from hybridcert.datasets.safety import (
    CATEGORIES,
    MODES,
    OBJECTS,
    TARGET_KINDS,
    VERBS,
    SafetyData,
    vocabulary,
)
from hybridcert.models.fusion import IMAGE_AUX, TEXT_AUX, FilterConfig, SafetyFilter
from hybridcert.noise import Gaussian, Substitution


def noises_for(config: FilterConfig) -> dict:
    """The smoothing noise of a model's modalities: Gaussian on the image, substitution over
    MiniLM's 29,523 ordinary WordPiece ids on the text."""
    out = {}
    if "image" in config.modalities:
        out["image"] = Gaussian(config.sigma)
    if "text" in config.modalities:
        out["text"] = Substitution(config.keep_prob, vocabulary().size)
    return out


def hybrid_noise(config: FilterConfig, noised: bool = True) -> HybridNoise:
    """The :class:`HybridNoise` of a model (``noised=False``: the same blocks, no noise)."""
    noises = noises_for(config) if noised else {}
    return HybridNoise([Continuous("image", noises.get("image")),
                        Tokens("text", noises.get("text"), vocabulary())])


def auxiliary_targets(data: SafetyData) -> dict[str, torch.Tensor]:
    """The annotations the auxiliary heads learn (see :class:`SafetyFilter`)."""
    meta = data.meta
    verbs = list(VERBS)
    affords = np.array([[v in OBJECTS[o][1] for v in verbs] for o in meta["obj"]], np.float32)
    return {
        "category": torch.tensor([CATEGORIES.index(OBJECTS[o][0]) for o in meta["obj"]]),
        "affords": torch.from_numpy(affords.reshape(len(data), len(verbs))),
        "bloodied": torch.from_numpy(meta["bloodied"].astype(np.float32)),
        "verb": torch.tensor([verbs.index(v) for v in meta["verb"]]),
        "mode": torch.tensor([MODES.index(m) for m in meta["mode"]]),
        "target": torch.tensor([TARGET_KINDS.index(t) for t in meta["target"]]),
        "negated": torch.from_numpy((meta["frame"] == "negate").astype(np.float32)),
    }


def _auxiliary_loss(aux: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], idx
                    ) -> torch.Tensor:
    ce, bce = torch.nn.functional.cross_entropy, \
        torch.nn.functional.binary_cross_entropy_with_logits
    loss = torch.zeros(())
    for modality, spec in (("image", IMAGE_AUX), ("text", TEXT_AUX)):
        if modality not in aux:
            continue
        start = 0
        for name, width in spec.items():
            logits = aux[modality][:, start: start + width]
            target = targets[name][idx]
            loss = loss + (bce(logits.squeeze(1), target) if width == 1 else
                           bce(logits, target) if target.is_floating_point() else
                           ce(logits, target))
            start += width
    return loss


def _length_buckets(lengths: np.ndarray, batch_size: int, generator: torch.Generator
                    ) -> list[np.ndarray]:
    """A random epoch of batches whose captions have similar lengths: shuffle, sort each
    window of 32 batches by length, cut into batches, shuffle the batches (less padding
    for the transformer; every record once per epoch)."""
    order = torch.randperm(len(lengths), generator=generator).numpy()
    window = 32 * batch_size
    batches = []
    for begin in range(0, len(order), window):
        part = order[begin: begin + window]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i: i + batch_size] for i in range(0, len(part), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def train(config: FilterConfig, data: SafetyData, epochs: int = 8, batch_size: int = 64,
          lr: float = 2e-3, text_lr: float = 5e-4, log: Callable[[str], None] = print,
          noised: bool = True, aux_weight: float = 1.0, device: str = "cpu") -> SafetyFilter:
    """Train a :class:`SafetyFilter` under its own noise levels (fresh noise every batch).

    Parameters
    ----------
    config : FilterConfig
        Modalities, architecture, noise levels (``sigma``, ``keep_prob``) and seed.
    data : SafetyData
        Training records.
    epochs, batch_size : int
        Passes over ``data`` and records per step.
    lr, text_lr : float
        Peak learning rates (one-cycle schedule) of the new weights and of the pretrained
        MiniLM layers.
    log : callable
        Receives one line per epoch.
    noised : bool
        False trains on clean inputs (the unimodal probes); certified models need True.
    aux_weight : float
        Weight of the auxiliary heads' loss (0: the label alone).
    device : str
        Where the model trains ("cpu", "cuda", "cuda:N").  The batches and their noise are
        drawn on the CPU (the same generator and draws everywhere) and then moved there; the
        arithmetic on an accelerator differs, so its weights differ from the CPU's.  The
        model is returned on the CPU.

    Returns
    -------
    SafetyFilter
        In eval mode, on the CPU.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model = SafetyFilter(config).to(device)
    pretrained = [p for n, p in model.named_parameters()
                  if n.startswith("text_encoder.") and p.requires_grad]
    new = [p for n, p in model.named_parameters()
           if not n.startswith("text_encoder.") and p.requires_grad]
    groups = [{"params": new, "lr": lr}] + ([{"params": pretrained, "lr": text_lr}]
                                            if pretrained else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
    steps = epochs * ((len(data) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(config.seed + 1)
    noise = hybrid_noise(config, noised)
    labels = torch.from_numpy(data.labels).to(device)
    targets = {k: v.to(device) for k, v in auxiliary_targets(data).items()} if aux_weight \
        else {}
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        start, total, correct = time.perf_counter(), 0.0, 0
        model.train()
        for idx in _length_buckets(data.attention.sum(1), batch_size, generator):
            batch = noise.noise_batch(data.batch(idx), generator)
            if device.type != "cpu":
                batch = {k: v.to(device) for k, v in batch.items()}
            features = model.features(batch)
            logits = model.classify(features)
            loss = loss_fn(logits, labels[torch.from_numpy(idx).to(device)])
            if aux_weight:
                loss = loss + aux_weight * _auxiliary_loss(model.auxiliary(features), targets,
                                                           torch.from_numpy(idx).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == labels[torch.from_numpy(idx).to(device)]).sum())
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(data):.3f}, "
            f"{'noisy ' if noised else 'clean '}train accuracy "
            f"{correct / len(data):.3f} ({time.perf_counter() - start:.1f} s)")
    config.epochs = epochs
    return model.cpu().eval()


@torch.no_grad()
def predict(model: SafetyFilter, data: SafetyData, copies: int = 0, seed: int = 0,
            batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Labels of ``data``: on clean inputs (``copies=0``), on one noisy copy (``copies=1``),
    or the majority vote of ``copies`` noisy copies (ties go to class 0).  The noise is drawn
    on the CPU; off the CPU a copy of the model runs on ``device``."""
    model.eval()
    device = torch.device(device)
    if device.type != "cpu":
        model = copy.deepcopy(model).to(device)
    generator = torch.Generator().manual_seed(seed)
    noise = hybrid_noise(model.config, noised=copies > 0)
    repeat = max(1, copies)
    out = np.empty(len(data), dtype=np.int64)
    per_batch = max(1, batch_size // repeat)
    for begin in range(0, len(data), per_batch):
        index = np.arange(begin, min(begin + per_batch, len(data)))
        batch = {k: v.repeat_interleave(repeat, 0) for k, v in data.batch(index).items()}
        batch = noise.noise_batch(batch, generator)
        if device.type != "cpu":
            batch = {k: v.to(device) for k, v in batch.items()}
        labels = model(batch).argmax(1).view(-1, repeat)
        votes = labels.sum(1)
        out[index] = (2 * votes > repeat).long().cpu().numpy()
    return out


def class_metrics(pred: np.ndarray, labels: np.ndarray) -> dict:
    """Recall of each class and balanced accuracy (their mean)."""
    safe = float(np.mean(pred[labels == 0] == 0)) if (labels == 0).any() else float("nan")
    unsafe = float(np.mean(pred[labels == 1] == 1)) if (labels == 1).any() else float("nan")
    return {"safe": safe, "unsafe": unsafe, "balanced": (safe + unsafe) / 2}


def evaluate(model: SafetyFilter, data: SafetyData, votes: int = 0, seed: int = 0,
             device: str = "cpu") -> dict:
    """Clean, noisy (one copy) and, with ``votes > 0``, majority-vote ("smoothed", no
    abstention, not a certificate) per-class accuracy; overall and per slice.  Also
    ``clean_accuracy`` and ``noisy_accuracy``: plain accuracies (= balanced accuracy on the
    exactly balanced splits).  ``device``: where the model runs (:func:`predict`)."""
    modes = {"clean": 0, "noisy": 1}
    if votes:
        modes["smoothed"] = votes
    out = {}
    slices = np.unique(data.meta["slice"])
    for mode, copies in modes.items():
        pred = predict(model, data, copies, seed, device=device)
        out[mode] = class_metrics(pred, data.labels)
        if mode in ("clean", "noisy"):
            out[f"{mode}_accuracy"] = float(np.mean(pred == data.labels))
        if len(slices) > 1:
            for name in slices:
                mask = data.meta["slice"] == name
                out[f"{mode}:{name}"] = class_metrics(pred[mask], data.labels[mask])
    return out


__all__ = ["class_metrics", "evaluate", "hybrid_noise", "noises_for", "predict", "train"]
