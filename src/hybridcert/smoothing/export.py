"""Per-input exports: the smoothing literature's TSV schema (plus the hybrid frontier) and JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from hybridcert.smoothing.core import Certification


def certification_rows(results: Sequence[Certification], labels: Sequence[int],
                       ids: Iterable | None = None) -> list[dict]:
    """One dict per input: ``idx label predict radius correct time`` + hybrid columns."""
    ids = list(ids) if ids is not None else list(range(len(results)))
    rows = []
    for idx, result, label in zip(ids, results, labels, strict=True):
        rows.append({
            "idx": idx,
            "label": int(label),
            "predict": int(result.label),
            "radius": float(result.radius),
            "correct": int(result.label == label),
            "time": round(result.time_s, 6),
            "p_lower": result.p_lower,
            "max_tokens": result.max_tokens,
            "frontier": result.frontier(),
        })
    return rows


def write_tsv(path: str | Path, rows: Sequence[dict]) -> None:
    """Tab-separated file readable by Cohen et al.'s analysis scripts; the frontier is
    spread over ``radius_r0, radius_r1, ...`` columns (empty beyond an input's r_max)."""
    width = max((len(row["frontier"]) for row in rows), default=0)
    columns = ["idx", "label", "predict", "radius", "correct", "time", "p_lower", "max_tokens"]
    columns += [f"radius_r{r}" for r in range(width)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            radii = [f"{item['l2_radius']:.6g}" for item in row["frontier"]]
            values = [row[c] for c in columns[:8]] + radii + [""] * (width - len(radii))
            writer.writerow(values)


def write_json(path: str | Path, rows: Sequence[dict]) -> None:
    Path(path).write_text(json.dumps(rows, indent=1))
