"""Detection thresholds chosen on the validation split for a benign false-flag rate.

The smoothed detector flags an input iff the smoothed probability of the unsafe class is at
least ``tau``.  ``tau`` is chosen on validation records only (never on the test inputs it is
reported on): each benign (safe) record's smoothed unsafe probability is estimated from
``copies`` noisy copies, those estimated at 1/2 or more again from ``more`` copies of the same
stream (:func:`refine`), and ``tau`` is placed just above the estimate of the benign record
ranked ``floor(max_rate * N) + 1``, so that at most ``max_rate`` of them are flagged by their
point estimates.  The rate achieved on test is measured on the
certified decisions and reported beside it.
"""

from __future__ import annotations

import numpy as np


def choose_threshold(safe_scores, copies, max_rate: float = 0.05) -> dict:
    """``tau`` for a false-flag rate of at most ``max_rate`` on benign validation records.

    Parameters
    ----------
    safe_scores : array_like
        Point estimates ``p_hat = k / copies`` of the smoothed unsafe probability of the
        benign validation records.
    copies : int or array_like of int
        Copies behind each estimate (one number, or one per record when the records near the
        top were re-estimated with more copies).
    max_rate : float
        Largest share of benign records the threshold may flag, in (0, 1).

    Returns
    -------
    dict
        ``tau`` in (0, 1): midway between the estimate of the benign record ranked
        ``floor(max_rate * N) + 1`` (the pivot) and the next higher estimate (half the finest
        resolution above the pivot when none is higher), so that at most ``max_rate`` of the
        records have ``p_hat >= tau``; ``rate``, that share; ``feasible``: False when the
        pivot is already 1 (then ``tau`` is 1 minus a quarter of the finest resolution and
        ``rate`` says by how much the target is exceeded).
    """
    scores = np.asarray(safe_scores, dtype=float)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError("safe_scores must be a non-empty 1-D array of estimates")
    counts = np.broadcast_to(np.asarray(copies), scores.shape)
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 1).any():
        raise ValueError(f"copies must be integers >= 1, got {copies!r}")
    if not 0 < max_rate < 1:
        raise ValueError(f"max_rate must lie in (0, 1), got {max_rate!r}")
    if (scores < 0).any() or (scores > 1).any():
        raise ValueError("safe_scores must lie in [0, 1]")
    finest = 1.0 / float(counts.max())
    allowed = int(np.floor(max_rate * scores.size + 1e-9))
    ordered = np.sort(scores)[::-1]
    pivot = ordered[allowed] if allowed < ordered.size else 0.0
    higher = ordered[ordered > pivot]
    tau = float((pivot + higher.min()) / 2) if higher.size else float(pivot + finest / 2)
    feasible = pivot < 1.0
    if not feasible:
        tau = 1.0 - finest / 4
    tau = min(max(tau, finest / 4), 1.0 - finest / 4)
    return {"tau": tau, "rate": float(np.mean(scores >= tau)), "feasible": bool(feasible),
            "records": int(scores.size), "copies": int(counts.max()),
            "max_rate": float(max_rate)}


def refine(scores, counts_fn, copies: int, more: int, above: float = 0.5):
    """Two-stage estimates: records whose ``copies``-copy estimate is at least ``above`` are
    re-estimated from the first ``more`` copies of the same streams (``counts_fn(index,
    more)`` returns their flagged counts), so the top of the distribution, where ``tau``
    falls, is resolved to ``1 / more``.  Returns (estimates, copies per record)."""
    scores = np.asarray(scores, dtype=float).copy()
    per = np.full(scores.shape, copies, dtype=np.int64)
    top = np.flatnonzero(scores >= above)
    if more > copies and top.size:
        scores[top] = np.asarray(counts_fn(top, more), dtype=float) / more
        per[top] = more
    return scores, per


def choose_score_threshold(safe_scores, max_rate: float = 0.05) -> dict:
    """``tau`` for continuous scores (e.g. the base model's softmax probability of the unsafe
    class): just above the score of the benign record ranked ``floor(max_rate * N) + 1``, so
    that at most ``max_rate`` of the benign records score ``>= tau``."""
    scores = np.asarray(safe_scores, dtype=float)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError("safe_scores must be a non-empty 1-D array of scores")
    if not 0 < max_rate < 1:
        raise ValueError(f"max_rate must lie in (0, 1), got {max_rate!r}")
    allowed = int(np.floor(max_rate * scores.size + 1e-9))
    ordered = np.sort(scores)[::-1]
    tau = float(np.nextafter(ordered[allowed], np.inf)) if allowed < ordered.size else \
        float(ordered[-1])
    return {"tau": tau, "rate": float(np.mean(scores >= tau)), "records": int(scores.size),
            "max_rate": float(max_rate)}


def choose_pair(image_scores, text_scores, labels, copies: int, max_rate: float = 0.05
                ) -> dict:
    """Thresholds ``(tau_image, tau_text)`` of the factorized AND detector (flag iff both
    branches flag): among the pairs on the estimate grid whose benign validation flag rate is
    at most ``max_rate``, the one flagging the most unsafe validation records (ties: the
    lowest thresholds).

    Returns
    -------
    dict
        ``tau_image``, ``tau_text``, ``rate`` (benign), ``recall`` (unsafe), ``feasible``.
    """
    img = np.asarray(image_scores, dtype=float)
    txt = np.asarray(text_scores, dtype=float)
    labels = np.asarray(labels)
    if not img.shape == txt.shape == labels.shape or img.ndim != 1:
        raise ValueError("image_scores, text_scores and labels must be 1-D of one length")
    if not 0 < max_rate < 1:
        raise ValueError(f"max_rate must lie in (0, 1), got {max_rate!r}")
    grid = (np.arange(copies) + 0.5) / copies             # tau just above each estimate
    safe, unsafe = labels == 0, labels == 1
    flag_image = (img[None, :] >= grid[:, None]).astype(float)       # (image tau, record)
    flag_text = (txt[None, :] >= grid[:, None]).astype(float)        # (text tau, record)

    def share(mask):            # (image tau, text tau): share of ``mask`` flagged by both
        if not mask.any():
            return np.zeros((grid.size, grid.size))
        return (flag_image[:, mask] @ flag_text[:, mask].T) / mask.sum()

    rate, recall = share(safe), share(unsafe)
    feasible = rate <= max_rate
    if not feasible.any():
        tau = float(grid[-1])
        flag = (img >= tau) & (txt >= tau)
        return {"tau_image": tau, "tau_text": tau,
                "rate": float(flag[safe].mean()) if safe.any() else 0.0,
                "recall": float(flag[unsafe].mean()) if unsafe.any() else 0.0,
                "feasible": False}
    # the most recall; among equals the lowest tau_image + tau_text; then the lowest tau_image
    best = feasible & (recall == recall[feasible].max())
    total = -grid[:, None] - grid[None, :]
    best &= total == total[best].max()
    i, t = np.argwhere(best)[0]
    return {"tau_image": float(grid[i]), "tau_text": float(grid[t]), "rate": float(rate[i, t]),
            "recall": float(recall[i, t]), "feasible": True}


__all__ = ["choose_pair", "choose_score_threshold", "choose_threshold", "refine"]
