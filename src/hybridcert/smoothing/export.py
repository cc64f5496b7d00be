"""Per-input exports: the smoothing literature's TSV schema (plus the hybrid frontier) and JSON.

Rows come from :func:`hybridcert.smoothing.results.result_row` (one row format everywhere).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from hybridcert.smoothing.results import Certification, result_row

#: Leading TSV columns (Cohen et al.'s analysis scripts read the first six).
TSV_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time", "id", "p_lower",
               "p_upper", "max_tokens", "queries", "status", "decided_at"]
#: Per target region j (decision mode, or fixed mode with targets), after the region columns.
TARGET_COLUMNS = ("certified", "status", "decided_at")


def certification_rows(results: Sequence[Certification], labels: Sequence | None = None,
                       ids: Iterable | None = None) -> list[dict]:
    """One row per input (see :func:`result_row`); ``labels`` may hold None (unlabelled)."""
    ids = list(ids) if ids is not None else list(range(len(results)))
    labels = list(labels) if labels is not None else [None] * len(results)
    return [result_row(i, input_id, None if label is None else int(label), result)
            for i, (input_id, result, label) in enumerate(zip(ids, results, labels,
                                                              strict=True))]


def write_tsv(path: str | Path, rows: Sequence[dict]) -> None:
    """Tab-separated file readable by Cohen et al.'s analysis scripts, the region spread over
    one column per token budget: ``radius_r0, radius_r1, ...`` with one token block,
    ``radius[caption=0,ocr=1] ...`` with several (empty where not certified).  The values are
    L2 radii of the Gaussian-noised block; with several Gaussian blocks they are the joint
    shift gamma* instead (columns ``gamma_r0`` / ``gamma[...]``).  Unbounded radii are
    ``inf``; unlabelled rows have empty ``label`` and ``correct``.  ``status`` and
    ``decided_at`` say how the answer at the zero budget ended and at which draw; with target
    regions, ``target<j>_certified`` (0/1), ``target<j>_status`` and ``target<j>_decided_at``
    follow the region columns, j = 0, 1, ... in the run's target order."""
    items = [item for row in rows for item in row["frontier"]]
    by_gamma = any(isinstance(item["l2_radius"], dict) for item in items)
    keys: list[str] = []
    for item in items:
        key = _frontier_key(item["tokens"], by_gamma)
        if key not in keys:
            keys.append(key)
    n_targets = max((len(row.get("targets") or []) for row in rows), default=0)
    target_keys = [f"target{j}_{c}" for j in range(n_targets) for c in TARGET_COLUMNS]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(TSV_COLUMNS + keys + target_keys)
        for row in rows:
            values = [_cell(row.get(c)) for c in TSV_COLUMNS]
            frontier = {_frontier_key(item["tokens"], by_gamma): item
                        for item in row["frontier"]}
            for key in keys:
                item = frontier.get(key)
                if item is None:
                    values.append("")
                    continue
                value = item["gamma"] if by_gamma else item["l2_radius"]
                values.append("inf" if value is None else f"{value:.6g}")
            targets = row.get("targets") or []
            for j in range(n_targets):
                target = targets[j] if j < len(targets) else {}
                values += [_cell(None if "certified" not in target
                                 else int(bool(target["certified"]))),
                           _cell(target.get("status")), _cell(target.get("decided_at"))]
            writer.writerow(values)


def _frontier_key(tokens, by_gamma: bool) -> str:
    prefix = "gamma" if by_gamma else "radius"
    if isinstance(tokens, dict):
        return f"{prefix}[" + ",".join(f"{k}={v}" for k, v in tokens.items()) + "]"
    return f"{prefix}_r{tokens}"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def write_json(path: str | Path, rows: Sequence[dict]) -> None:
    Path(path).write_text(json.dumps(rows, indent=1, allow_nan=False))
