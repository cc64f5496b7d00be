"""Certified accuracy over an (eps, r) grid, per-class metrics and Markdown tables."""

from __future__ import annotations

import numpy as np

EPS_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
TOKEN_GRID = (0, 1, 2, 4, 8)


def certified_accuracy(mask: np.ndarray) -> np.ndarray:
    return mask.mean(axis=0) if mask.size else np.zeros(mask.shape[1:])


def rows_regions(rows, token_blocks, sigmas):
    """The certified region of each stored row."""
    from hybridcert.blocks import CertifiedRegion

    return [CertifiedRegion.from_rows(token_blocks, sigmas, row["frontier"]) for row in rows]


def grid_mask(regions, budgets) -> np.ndarray:
    """``(n, len(budgets))`` booleans: region i certifies budget j."""
    return np.array([[region.certifies(b) for b in budgets] for region in regions],
                    dtype=bool).reshape(len(regions), len(budgets))


def class_metrics(rows, certified: np.ndarray, num_classes: int) -> dict:
    """Certified accuracy overall, per class and balanced, from a ``(n, cells)`` mask of
    certified regions; unlabelled rows are left out.  Also the constant classifier's
    reference (always the most frequent class: certified everywhere by construction)."""
    labelled = [i for i, row in enumerate(rows) if row["label"] is not None]
    labels = np.array([rows[i]["label"] for i in labelled], dtype=int)
    correct = np.array([rows[i]["predict"] == rows[i]["label"] for i in labelled], dtype=bool)
    hit = certified[labelled] & correct[:, None] if labelled else \
        np.zeros((0, certified.shape[1]), dtype=bool)
    per_class, counts = {}, {}
    for c in range(num_classes):
        members = labels == c
        counts[c] = int(members.sum())
        per_class[c] = hit[members].mean(axis=0) if members.any() else \
            np.full(certified.shape[1], np.nan)
    present = [c for c in range(num_classes) if counts[c]]
    balanced = np.mean([per_class[c] for c in present], axis=0) if present else \
        np.full(certified.shape[1], np.nan)
    majority = max(counts, key=counts.get) if labelled else None
    return {"inputs": len(labelled), "class_counts": counts,
            "accuracy": hit.mean(axis=0) if labelled else np.full(certified.shape[1], np.nan),
            "per_class": per_class, "balanced": balanced,
            "constant_class": majority,
            "constant_accuracy": counts[majority] / len(labelled) if labelled else float("nan"),
            "constant_balanced": 1.0 / len(present) if present else float("nan")}


def markdown_table(values: np.ndarray, row_labels, column_labels, corner: str) -> str:
    """A percentage table (NaN shown as -)."""
    head = f"| {corner} | " + " | ".join(str(c) for c in column_labels) + " |"
    rule = "|---" * (len(column_labels) + 1) + "|"
    body = [f"| {r} | " + " | ".join("-" if np.isnan(v) else f"{100 * v:.1f}" for v in row)
            + " |" for r, row in zip(row_labels, values, strict=True)]
    return "\n".join([head, rule, *body])


def markdown_interval_table(mean, low, high, row_labels, column_labels, corner: str,
                            blank=None, digits: int = 1, per_seed=None) -> str:
    """A percentage table whose cells read ``mean [low, high]``; cells where ``blank`` is
    True read ``–`` (e.g. beyond the sample-size ceiling), NaN reads ``-``; with
    ``per_seed`` (shape (seeds, rows, columns), two seeds or more) every cell is followed by
    the seeds' own values, ``(a / b / c)``."""
    mean, low, high = (np.atleast_2d(np.asarray(a, dtype=float)) for a in (mean, low, high))
    seeds = None if per_seed is None else np.asarray(per_seed, dtype=float).reshape(
        (-1,) + mean.shape)
    if seeds is not None and seeds.shape[0] < 2:
        seeds = None
    blank = np.zeros(mean.shape, dtype=bool) if blank is None else \
        np.atleast_2d(np.asarray(blank, dtype=bool))
    head = f"| {corner} | " + " | ".join(str(c) for c in column_labels) + " |"
    rule = "|---" * (len(column_labels) + 1) + "|"
    body = []
    for a, label in enumerate(row_labels):
        cells = []
        for b in range(mean.shape[1]):
            if blank[a, b]:
                cells.append("–")
            elif np.isnan(mean[a, b]):
                cells.append("-")
            else:
                cells.append(f"{100 * mean[a, b]:.{digits}f} [{100 * low[a, b]:.{digits}f}, "
                             f"{100 * high[a, b]:.{digits}f}]" + (
                                 "" if seeds is None else " (" + " / ".join(
                                     f"{100 * v:.{digits}f}" for v in seeds[:, a, b]) + ")"))
        body.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])
