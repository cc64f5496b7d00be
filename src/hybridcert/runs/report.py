"""Report of a stored run: tables, plots, abstain rate and per-input exports."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hybridcert.reports import plots, tables
from hybridcert.runs.store import RunStore
from hybridcert.smoothing import write_json, write_tsv


def run_tables(store_path: Path) -> dict:
    """Certified accuracy over the (eps, r) grid and the abstain rate of a stored run."""
    store = RunStore(store_path)
    rows = [r for r in store.results() if r.label is not None]
    store.close()
    predict = [r.predict for r in rows]
    labels = [r.label for r in rows]
    mask = tables.certified_mask(predict, labels, [r.max_tokens for r in rows],
                                 [r.l2_radius for r in rows])
    return {"inputs": len(rows), "accuracy": tables.certified_accuracy(mask),
            "abstain_rate": float(np.mean([r.predict == -1 for r in rows])) if rows else 0.0,
            "rows": rows}


def write_report(store_path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    store = RunStore(store_path)
    config, version, run_id = store.config, store.library_version, store.run_id
    store.close()
    summary = run_tables(store_path)
    rows, acc = summary["rows"], summary["accuracy"]
    with open(folder / "certified_accuracy.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["eps"] + [f"r={r}" for r in tables.TOKEN_GRID])
        for a, eps in enumerate(tables.EPS_GRID):
            writer.writerow([eps] + [f"{v:.4f}" for v in acc[a]])
    exports = [{"idx": r.idx, "label": r.label, "predict": r.predict,
                "radius": r.l2_radius[0] if r.l2_radius else 0.0,
                "correct": int(r.predict == r.label), "time": r.time_s, "p_lower": r.p_lower,
                "max_tokens": r.max_tokens,
                "frontier": [{"tokens": t, "l2_radius": e} for t, e in enumerate(r.l2_radius)]}
               for r in rows]
    write_tsv(folder / "certify.tsv", exports)
    write_json(folder / "certify.json", exports)
    figures = []
    if rows:
        pred, labels = [r.predict for r in rows], [r.label for r in rows]
        figures = [
            plots.accuracy_curves(pred, labels, [r.max_tokens for r in rows],
                                  [r.l2_radius for r in rows], folder / "curves.png",
                                  f"run {run_id}").name,
            plots.accuracy_heatmap(acc, folder / "heatmap.png", f"run {run_id}").name]
    text = [f"# Run {run_id} ({store_path})", "",
            f"hybridcert {version}; {summary['inputs']} labelled inputs; abstain rate "
            f"{100 * summary['abstain_rate']:.1f}%.", "",
            "Configuration: " + ", ".join(f"{k}={v}" for k, v in sorted(config.items())), "",
            "Certified accuracy (%):", "", tables.markdown_grid(acc), ""]
    text += [f"![{f}]({f})" for f in figures]
    text += ["", "Per-input exports: certify.tsv (idx label predict radius correct time ...), "
             "certify.json."]
    (folder / "REPORT.md").write_text("\n".join(text) + "\n")
    return folder
