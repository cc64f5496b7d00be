"""Empirical joint attacks: L2 PGD on the image plus greedy token substitution.

Used to show how fragile the *base* model is, and that the same attack aimed at the
smoothed classifier (expectation over noise, a modest number of samples) does not flip a
certified input inside its certified region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybridcert.blocks import HybridNoise, Vocabulary


def _loss(model, images, tokens, label, noises, vocab, samples, generator):
    """Cross-entropy of the true label; averaged over noisy copies when ``samples > 0``."""
    if samples:
        hybrid = HybridNoise.from_noises(noises, {"text": vocab})
        batch = hybrid.noise_batch({"image": images.expand(samples, -1, -1, -1),
                                    "text": tokens.expand(samples, -1)}, generator)
        probs = F.softmax(model(batch), dim=1).mean(0, keepdim=True)
        return F.nll_loss(torch.log(probs + 1e-12), label)
    return F.cross_entropy(model({"image": images, "text": tokens}), label)


def joint_attack(model, image: torch.Tensor, tokens: torch.Tensor, label: int, eps: float,
                 r: int, vocab: Vocabulary, noises: dict | None = None, samples: int = 0,
                 steps: int = 20, candidates: int = 64, seed: int = 0):
    """Return (adversarial image, adversarial tokens) within L2 ``eps`` and ``r`` tokens.

    Tokens first (greedy: at each of ``r`` rounds, the single substitution among
    ``candidates`` random ids per noisable position that most raises the loss), then PGD on
    the image (``steps`` normalised-gradient steps projected onto the L2 ball and [0, 1]).
    With ``noises`` and ``samples``, losses are expectations over the smoothing noise.
    """
    generator = torch.Generator().manual_seed(seed)
    noises = noises or {}
    target = torch.tensor([label])
    x = image.unsqueeze(0)
    ids = tokens.unsqueeze(0).clone()
    noisable = vocab.to_indices(ids[0]) >= 0
    changed = torch.zeros_like(noisable)
    model.eval()
    for _ in range(r):
        positions = torch.nonzero(noisable & ~changed).flatten()
        if positions.numel() == 0:
            break
        draws = vocab.noisable_ids[torch.randint(0, vocab.size, (positions.numel(), candidates),
                                                 generator=generator)]
        trial = ids.repeat(positions.numel() * candidates, 1)
        rows = torch.arange(trial.shape[0])
        trial[rows, positions.repeat_interleave(candidates)] = draws.flatten()
        with torch.no_grad():
            logits = model({"image": x.expand(trial.shape[0], -1, -1, -1), "text": trial})
            margin = logits[:, label] - logits[:, 1 - label]
        best = int(margin.argmin())
        ids = trial[best: best + 1]
        changed[positions[best // candidates]] = True
    if eps > 0:
        delta = torch.zeros_like(x, requires_grad=True)
        step = 2.5 * eps / steps
        for _ in range(steps):
            loss = _loss(model, (x + delta).clamp(0, 1), ids, target, noises, vocab, samples,
                         generator)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta += step * grad / grad.flatten().norm().clamp(min=1e-12)
                norm = delta.flatten().norm()
                if norm > eps:
                    delta *= eps / norm
                delta.copy_((x + delta).clamp(0, 1) - x)
        x = (x + delta).detach()
    return x[0], ids[0]
