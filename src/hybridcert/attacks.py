"""Empirical joint attacks: L2 PGD on the image plus greedy token substitution.

One attack, two targets at the same budget ``(eps, r)``:

* the **base model** (``noise=None``): losses on the input itself;
* the **smoothed classifier** (``noise=`` the smoothing noise, ``samples > 0``): an adaptive
  attack on the expectation over noise — the PGD loss is the cross-entropy of the noise-averaged
  probabilities (Salman et al., 2019), and a token substitution is scored by the base model's
  probability of the true class when the changed position shows the new token and every other
  position is noised (its effect on the smoothed probability is exactly ``a - beta`` times the
  change of that conditional probability, so it is estimated without the noise hiding it).

Token candidates come from the gradient with respect to the token embeddings (HotFlip: the
first-order change ``(e_new - e_old) . grad`` at each attackable position) when the model
exposes ``text_encoder.embeddings.word_embeddings`` (the safety filter does), else at random
from the vocabulary; each round applies the single candidate that lowers the true class most.
Only positions the threat noises may change (``positions``; default: every content token), and
only to noisable ids, so the attack stays inside the threat model the certificate covers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybridcert.blocks import HybridNoise, Vocabulary


def _batch(images: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor) -> dict:
    return {"image": images, "text": ids, "text_attention": attention.expand_as(ids)}


def _probs(model, batch) -> torch.Tensor:
    return F.softmax(model(batch), dim=1)


class _EmbeddingGrad:
    """Capture the gradient of the loss with respect to the token embeddings of a batch."""

    def __init__(self, model):
        encoder = getattr(model, "text_encoder", None)
        self.table = None
        self.module = None
        if encoder is not None and hasattr(encoder, "embeddings"):
            self.module = encoder.embeddings.word_embeddings
            self.table = self.module.weight.detach()
        self.output = None

    def __enter__(self):
        if self.module is None:
            return self

        def hook(_module, _inputs, output):
            output = output.detach().requires_grad_(True)
            self.output = output
            return output

        self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        if self.module is not None:
            self.handle.remove()


def _noisy(noise: HybridNoise | None, images, ids, attention, samples, generator,
           noised: torch.Tensor | None = None):
    """``samples`` noisy copies (image noised, text noised at the positions ``noised``, by
    default its noisable attended ids), or the input itself without noise."""
    if noise is None or not samples:
        return _batch(images, ids, attention)
    batch = {"image": images.expand(samples, *images.shape[1:]),
             "text": ids.expand(samples, -1)}
    noisable = None if noised is None else {"text": noised.expand(samples, -1)}
    return noise.noise_batch(batch, generator, noisable=noisable,
                             attention={"text": attention.expand(samples, -1)})


def true_class_probability(model, image: torch.Tensor, tokens: torch.Tensor, label: int,
                           attention: torch.Tensor, noise: HybridNoise | None = None,
                           samples: int = 0, generator: torch.Generator | None = None) -> float:
    """Probability of ``label``: the base model's softmax on the input (``noise=None``), or
    its average over ``samples`` noisy copies."""
    with torch.no_grad():
        batch = _noisy(noise, image[None], tokens[None], attention, samples, generator)
        return float(_probs(model, batch)[:, label].mean())


def joint_attack(model, image: torch.Tensor, tokens: torch.Tensor, label: int, eps: float,
                 r: int, vocab: Vocabulary, *, attention: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None, noise: HybridNoise | None = None,
                 samples: int = 0, steps: int = 20, candidates: int = 16, seed: int = 0,
                 image_first: bool = False, rounds: int = 1,
                 common_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (adversarial image, adversarial tokens) within L2 ``eps`` and ``r`` tokens.

    Parameters
    ----------
    model : torch.nn.Module
        Base model on batches ``{"image", "text", "text_attention"}`` returning logits.
    image : Tensor (C, H, W)
        In [0, 1]; the attacked image stays in [0, 1].
    tokens : LongTensor (L,)
        The input's ids.
    label : int
        The class to move away from (the detector's flagged class for an evasion).
    eps : float
        L2 budget on the image (pixels in [0, 1]).
    r : int
        Tokens that may be substituted.
    vocab : Vocabulary
        Substitutions are drawn from its noisable ids.
    attention : Tensor (L,), optional
        The input's attention mask (0 over padding), passed with every batch; default all
        ones.
    positions : BoolTensor (L,), optional
        Positions the threat lets the attacker change (default: attended noisable ids); the
        smoothing noise acts on the same positions (the threat's noised positions).
    noise : HybridNoise, optional
        The smoothing noise: attack the smoothed classifier (expectation over ``samples``
        noisy copies per evaluation) instead of the base model.
    samples : int
        Noisy copies per evaluation when ``noise`` is given.
    steps : int
        PGD steps (normalised gradient, projected on the L2 ball and [0, 1]).
    candidates : int
        (position, token) candidates evaluated per substitution round.
    seed : int
        Seed of the attack's own noise and random candidates.
    image_first : bool
        Run PGD first, choose the substitutions at the attacked image, then run PGD again
        from there (tokens chosen where the image already pushes towards the boundary);
        default: tokens, then PGD.
    rounds : int
        Rounds of (token choice, PGD): each later round chooses the substitutions afresh,
        from the input's own ids, at the image the previous round reached, and continues PGD
        from there (coordinate descent over the two modalities).
    common_noise : bool
        Score every candidate substitution at a position on the same noisy copies (common
        random numbers: the comparison between candidates is not swamped by the noise of
        independent estimates); default: fresh copies per candidate.
    """
    if eps < 0 or r < 0:
        raise ValueError(f"eps and r must be >= 0, got eps={eps!r}, r={r!r}")
    if not (isinstance(rounds, int) and rounds >= 1):
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if noise is not None and samples < 1:
        raise ValueError(f"samples must be >= 1 to attack the smoothed classifier, got "
                         f"{samples!r}")
    generator = torch.Generator().manual_seed(seed)
    attention = torch.ones_like(tokens) if attention is None else torch.as_tensor(attention)
    attention = attention.long()
    if attention.shape != tokens.shape:
        raise ValueError(f"attention must have the tokens' shape {tuple(tokens.shape)}, got "
                         f"{tuple(attention.shape)}")
    attackable = vocab.contains(tokens) & attention.bool() if positions is None else \
        torch.as_tensor(positions, dtype=torch.bool) & vocab.contains(tokens)
    if hasattr(model, "eval"):
        model.eval()
    x = image.unsqueeze(0)
    ids = tokens.clone()
    changed = torch.zeros_like(attackable)
    start = x
    if image_first and eps > 0:
        start = pgd(model, x, ids, attention, label, eps, steps, noise, samples, generator,
                     noised=attackable)
    original = ids
    for _ in range(rounds):
        ids, changed = original.clone(), torch.zeros_like(attackable)
        for _ in range(r):
            free = attackable & ~changed
            if not bool(free.any()):
                break
            pairs = _candidates(model, start, ids, attention, label, free, vocab, noise,
                                samples, candidates, generator)
            scores = _scores(model, start, ids, attention, label, pairs, noise, samples,
                             generator, common_noise, attackable)
            best = min(range(len(pairs)), key=scores.__getitem__)
            pos, tok = pairs[best]
            ids = ids.clone()
            ids[pos] = tok
            changed[pos] = True
        if eps > 0:
            start = pgd(model, x, ids, attention, label, eps, steps, noise, samples,
                         generator, start=start - x, noised=attackable)
    return start[0].detach(), ids


def _candidates(model, x, ids, attention, label, free, vocab, noise, samples, count,
                generator) -> list[tuple[int, int]]:
    """(position, token id) pairs: the ``count`` best first-order substitutions, or random
    ones when the model's token embeddings are not reachable."""
    free_positions = torch.nonzero(free).flatten()
    grabber = _EmbeddingGrad(model)
    if grabber.table is None:
        pos = free_positions[torch.randint(0, free_positions.numel(), (count,),
                                           generator=generator)]
        tok = vocab.noisable_ids[torch.randint(0, vocab.size, (count,), generator=generator)]
        return list(zip(pos.tolist(), tok.tolist(), strict=True))
    with grabber:
        # the image noised (expectation), the text as it is: the gradient at the current ids
        images = x if noise is None or not samples else \
            noise.noise_batch({"image": x.expand(samples, *x.shape[1:])}, generator)["image"]
        batch = _batch(images, ids.expand(images.shape[0], -1), attention)
        loss = -torch.log(_probs(model, batch)[:, label].mean() + 1e-12)
        (grad,) = torch.autograd.grad(loss, grabber.output)
    grad = grad.sum(0)                                          # (L', dim)
    table = grabber.table[vocab.noisable_ids]                   # (V, dim)
    gains = []
    for pos in free_positions.tolist():
        if pos >= grad.shape[0]:
            continue
        current = grabber.table[ids[pos]]
        gains.append((table - current) @ grad[pos])            # loss increase, first order
    gain = torch.stack(gains)                                   # (P, V)
    top = torch.topk(gain.flatten(), min(count, gain.numel())).indices
    rows, cols = top // gain.shape[1], top % gain.shape[1]
    positions = free_positions[: gain.shape[0]]
    return [(int(positions[i]), int(vocab.noisable_ids[j])) for i, j in
            zip(rows.tolist(), cols.tolist(), strict=True)]


def _scores(model, x, ids, attention, label, pairs, noise, samples, generator,
            shared: bool, noised: torch.Tensor) -> list[float]:
    """Probability of ``label`` with ``ids[pos] = tok`` for each (pos, tok) pair: on the
    input itself, or averaged over noisy copies in which that position shows the new token
    and every other one is noised — fresh copies per pair, or with ``shared`` one set of
    copies per position for all its pairs (the candidate token written into each)."""
    groups: dict = {}
    for j, (pos, _) in enumerate(pairs):
        groups.setdefault(pos if shared else j, []).append(j)
    scores = [0.0] * len(pairs)
    with torch.no_grad():
        for members in groups.values():
            pos = pairs[members[0]][0]
            fixed = None
            if noise is not None and samples:
                fixed = noised.clone()
                fixed[pos] = False
            batch = _noisy(noise, x, ids[None], attention, samples, generator, fixed)
            for j in members:
                trial = dict(batch, text=batch["text"].clone())
                trial["text"][:, pos] = pairs[j][1]
                scores[j] = float(_probs(model, trial)[:, label].mean())
    return scores


def pgd(model, x, ids, attention, label, eps, steps, noise, samples, generator, start=None,
         noised=None):
    """L2 projected gradient ascent on the loss of ``label`` under the smoothing noise.

    ``steps`` normalized-gradient steps of size ``2.5 eps / steps`` on the image ``x``
    (pixels kept in [0, 1]), each averaging the model's probabilities over ``samples`` noisy
    copies (``noise``, drawn from ``generator``, or the fixed ``noised`` draws); the
    perturbation stays in the L2 ball of radius ``eps`` (from ``start``, a perturbation, when
    given).  Returns the attacked image.
    """
    target = torch.tensor([label])
    delta = (torch.zeros_like(x) if start is None else start.detach().clone()).requires_grad_()
    step = 2.5 * eps / steps
    for _ in range(steps):
        images = (x + delta).clamp(0, 1)
        batch = _noisy(noise, images, ids[None], attention, samples, generator, noised)
        probs = _probs(model, batch).mean(0, keepdim=True)
        loss = F.nll_loss(torch.log(probs + 1e-12), target)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += step * grad / grad.flatten().norm().clamp(min=1e-12)
            norm = delta.flatten().norm()
            if norm > eps:
                delta *= eps / norm
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


__all__ = ["joint_attack", "true_class_probability"]
