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
               "p_upper", "max_tokens", "queries"]


def certification_rows(results: Sequence[Certification], labels: Sequence | None = None,
                       ids: Iterable | None = None) -> list[dict]:
    """One row per input (see :func:`result_row`); ``labels`` may hold None (unlabelled)."""
    ids = list(ids) if ids is not None else list(range(len(results)))
    labels = list(labels) if labels is not None else [None] * len(results)
    return [result_row(i, input_id, None if label is None else int(label), result)
            for i, (input_id, result, label) in enumerate(zip(ids, results, labels,
                                                              strict=True))]


def write_tsv(path: str | Path, rows: Sequence[dict]) -> None:
    """Tab-separated file readable by Cohen et al.'s analysis scripts.  With one token block,
    the frontier is spread over ``radius_r0, radius_r1, ...`` (empty beyond an input's
    r_max); with several, one ``gamma[r1,r2,...]`` column per certified budget vector.
    Unlabelled rows have empty ``label`` and ``correct``."""
    keys: list[str] = []
    for row in rows:
        for item in row["frontier"]:
            key = _frontier_key(item["tokens"])
            if key not in keys:
                keys.append(key)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(TSV_COLUMNS + keys)
        for row in rows:
            values = [_cell(row.get(c)) for c in TSV_COLUMNS]
            frontier = {_frontier_key(item["tokens"]): item for item in row["frontier"]}
            for key in keys:
                item = frontier.get(key)
                if item is None:
                    values.append("")
                elif isinstance(item["l2_radius"], float):
                    values.append(f"{item['l2_radius']:.6g}")
                else:
                    values.append(f"{item['gamma']:.6g}")
            writer.writerow(values)


def _frontier_key(tokens) -> str:
    if isinstance(tokens, dict):
        return "gamma[" + ",".join(f"{k}={v}" for k, v in tokens.items()) + "]"
    return f"radius_r{tokens}"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def write_json(path: str | Path, rows: Sequence[dict]) -> None:
    Path(path).write_text(json.dumps(rows, indent=1, allow_nan=False))
