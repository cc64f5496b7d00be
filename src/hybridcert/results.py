"""A stored run as data: ``hybridcert.results.load(store)`` returns a pandas DataFrame (the
``[data]`` extra).

One row per input — or, when the run asked about target regions, one row per input and
target — with the stored row's fields (:func:`hybridcert.smoothing.result_row`) and the
certified region as columns: ``l2_r0, l2_r1, ...`` (the certified L2 radius at 0, 1, ...
changed tokens; NaN where nothing is certified), ``gamma_...`` instead with several
Gaussian-noised blocks, one column per token budget combination with several token blocks,
and ``region``, the region as a sentence (``str`` of
:class:`~hybridcert.blocks.CertifiedRegion`).  :func:`attacks` returns the stored
``hybridcert attack`` results.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from hybridcert.blocks import CertifiedRegion
from hybridcert.runs.config import RunConfig
from hybridcert.runs.store import RunStore

#: Row fields kept as columns (``frontier`` and ``targets`` are spread out instead).
COLUMNS = ("idx", "id", "label", "predict", "correct", "decision", "rule", "mode", "p_lower",
           "p_upper", "radius", "max_tokens", "queries", "status", "decided_at", "looks",
           "time")


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("hybridcert.results needs pandas: pip install "
                          "'hybridcert[data]'") from None
    return pandas


def load(store: str | Path, run_id: int | None = None):
    """The stored run (its last run, or ``run_id``) as a DataFrame.

    Parameters
    ----------
    store : str or Path
        The SQLite file written by ``hybridcert certify``.
    run_id : int, optional
        Which run of the store (default: the last one).

    Returns
    -------
    pandas.DataFrame
        One row per input, or per input and target when the run has targets (columns
        ``target`` — the budget as text — ``target_<block>``, ``certified``, and the
        target's ``target_status`` and ``target_decided_at``: how and at which draw it
        ended); ``status`` and ``decided_at`` are the input's (the answer at the zero
        budget); the region as columns (see the module docstring).
    """
    pandas = _pandas()
    with RunStore(store, readonly=True, run_id=run_id) as opened:
        rows, config = opened.rows(), RunConfig.from_dict(opened.config)
        run = opened.run_id
    noises = config.block_noises()
    sigmas = {n: b.level for n, b in noises.items() if b.continuous}
    token_blocks = tuple(n for n, b in noises.items() if b.tokens)
    regions = [CertifiedRegion.from_rows(token_blocks, sigmas, r["frontier"]) for r in rows]
    shape = tuple(max([g.gamma.shape[a] for g in regions] + [1])
                  for a in range(len(token_blocks)))
    names = _region_columns(token_blocks, sigmas, shape)
    records = []
    for row, region in zip(rows, regions, strict=True):
        base = {"run": run, **{k: row.get(k) for k in COLUMNS}}
        if isinstance(base["max_tokens"], dict):
            base.update({f"max_tokens_{k}": v for k, v in base.pop("max_tokens").items()})
        base["region"] = str(region)
        for index, name in names:
            g = region.gamma_at(dict(zip(token_blocks, index, strict=True)))
            base[name] = g * next(iter(sigmas.values())) if len(sigmas) == 1 else g
        if row.get("notes"):
            base["notes"] = "; ".join(row["notes"])
        targets = row.get("targets") or []
        if not targets:
            records.append(base)
        for target in targets:
            budget = target["budget"]
            records.append({**base,
                            "target": ",".join(f"{k}={v:g}" for k, v in budget.items()
                                               if v) or "no change",
                            **{f"target_{k}": v for k, v in budget.items()},
                            "certified": bool(target["certified"]),
                            "target_status": target.get("status"),
                            "target_decided_at": target.get("decided_at")})
    frame = pandas.DataFrame.from_records(records)
    for column in ("label", "correct"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def attacks(store: str | Path, run_id: int | None = None):
    """The stored ``hybridcert attack`` results of a run, one row per input and attack
    (``kind`` inside or beyond, ``factor``), as a DataFrame."""
    pandas = _pandas()
    with RunStore(store, readonly=True, run_id=run_id) as opened:
        rows = opened.attack_rows()
    flat = []
    for row in rows:
        row = dict(row)
        budget = row.pop("budget")
        row.update({f"budget_{k}": v for k, v in budget.items()})
        flat.append(row)
    return pandas.DataFrame.from_records(flat)


def _region_columns(token_blocks, sigmas, shape) -> list[tuple[tuple, str]]:
    prefix = "l2" if len(sigmas) == 1 else "gamma"
    out = []
    for index in product(*[range(n) for n in shape]):
        if not token_blocks:
            suffix = ""
        elif len(token_blocks) == 1:
            suffix = f"_r{index[0]}"
        else:
            suffix = "_" + "_".join(f"{b}{r}" for b, r in zip(token_blocks, index, strict=True))
        out.append((index, prefix + suffix))
    return out


__all__ = ["attacks", "load"]
