"""Report of a stored run: per-class and balanced certified accuracy over a grid of budgets,
the constant-classifier reference, the sample-size ceiling, plots and per-input exports.

Everything is recomputed from the stored rows (the row format of
:func:`hybridcert.smoothing.result_row`) and the stored configuration.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from hybridcert.reports import plots, tables
from hybridcert.runs.config import RunConfig
from hybridcert.runs.store import RunStore
from hybridcert.smoothing import write_json, write_tsv

EPS_GRID = tables.EPS_GRID
TOKEN_GRID = tables.TOKEN_GRID
#: With several Gaussian-noised blocks the grid is over the joint shift gamma (std units).
GAMMA_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)


class Layout:
    """The grid a run's report is drawn on: one axis for the continuous change (L2 of the one
    Gaussian-noised block, or the joint shift gamma), one for each noised token block."""

    def __init__(self, config: RunConfig):
        noises = config.block_noises()
        self.sigmas = {n: b.level for n, b in noises.items() if b.kind == "gaussian"}
        self.token_blocks = tuple(n for n, b in noises.items()
                                  if b.kind in ("substitution", "mask"))
        self.by_gamma = len(self.sigmas) > 1
        self.continuous = EPS_GRID if not self.by_gamma else GAMMA_GRID
        if not self.sigmas:
            self.continuous = (0.0,)
        self.axis = "gamma" if self.by_gamma else "eps"

    def budget(self, x: float, block: str | None, r: int) -> dict:
        budget: dict[str, float] = {}
        if x:
            if self.by_gamma:      # the whole shift on the block with the largest sigma
                name, sigma = max(self.sigmas.items(), key=lambda kv: kv[1])
                budget[name] = x * sigma
            else:
                budget[next(iter(self.sigmas))] = x
        if r and block is not None:
            budget[block] = r
        return budget

    def tables(self):
        """(token block or None, budgets as a grid (len(continuous), len(TOKEN_GRID)))."""
        blocks = self.token_blocks or (None,)
        for block in blocks:
            grid_r = TOKEN_GRID if block is not None else (0,)
            yield block, grid_r, [[self.budget(x, block, r) for r in grid_r]
                                  for x in self.continuous]


def ceiling(config: RunConfig) -> float | None:
    """Largest L2 radius (r = 0, one Gaussian block) that the run's sample size can certify at
    all: every draw agreeing gives a bound of at most ``alpha ** (1 / n)``."""
    noises = config.block_noises()
    sigmas = [b.level for b in noises.values() if b.kind == "gaussian"]
    if len(sigmas) != 1:
        return None
    best = config.alpha ** (1.0 / config.n)
    base = 0.5 if config.rule == "majority" else float(config.threshold)
    if config.rule == "benign":
        return None
    return max(0.0, sigmas[0] * float(ndtri(best) - ndtri(base)))


def run_summary(store_path: Path) -> dict:
    """Rows, configuration and per-table metrics of the stored run."""
    with RunStore(store_path, readonly=True) as store:
        config_dict, version, run_id = store.config, store.library_version, store.run_id
        rows = store.rows()
    config = RunConfig.from_dict(config_dict)
    layout = Layout(config)
    regions = tables.rows_regions(rows, layout.token_blocks, layout.sigmas)
    out = {"config": config, "version": version, "run_id": run_id, "rows": rows,
           "layout": layout, "tables": []}
    for block, grid_r, budgets in layout.tables():
        flat = [b for line in budgets for b in line]
        mask = tables.grid_mask(regions, flat)
        metrics = tables.class_metrics(rows, mask, config.num_classes)
        shape = (len(budgets), len(grid_r))
        for key in ("accuracy", "balanced"):
            metrics[key] = np.asarray(metrics[key]).reshape(shape)
        metrics["per_class"] = {c: np.asarray(v).reshape(shape)
                                for c, v in metrics["per_class"].items()}
        out["tables"].append({"block": block, "tokens": grid_r, "metrics": metrics})
    return out


def write_report(store_path: Path, folder: Path) -> Path:
    """Write REPORT.md, CSV tables, plots and per-input exports of a stored run."""
    summary = run_summary(store_path)
    config, rows, layout = summary["config"], summary["rows"], summary["layout"]
    folder.mkdir(parents=True, exist_ok=True)
    names = _class_names(config)
    noise_text = ", ".join(f"{n} {b.spec()}" for n, b in config.block_noises().items())
    model_text = config.model or f"checkpoint {config.checkpoint}"
    rule_text = "majority vote" if config.rule == "majority" else \
        f"detector ({config.rule}, tau = {config.threshold:g}, flagged class " \
        f"{names[config.flagged_class]})"
    title = f"{model_text} | {noise_text} | {rule_text}"
    limit = ceiling(config)
    labelled = [r for r in rows if r["label"] is not None]
    abstain = float(np.mean([r["predict"] == -1 for r in rows])) if rows else 0.0
    times = np.array([r["time"] for r in rows]) if rows else np.zeros(0)
    text = [f"# Run {summary['run_id']} ({store_path})", "",
            f"hybridcert {summary['version']}; {len(rows)} inputs ({len(labelled)} labelled); "
            f"abstain rate {100 * abstain:.1f}%.", "",
            f"Model: {model_text}. Noise: {noise_text}. Rule: {rule_text}. Mode {config.mode}, "
            f"n = {config.n} (cap in sequential modes), alpha = {config.alpha}, threat "
            f"{config.threat}.", ""]
    if times.size:
        text += [f"Per-input time: median {np.median(times):.3f} s, max {times.max():.3f} s; "
                 f"queries per input: mean {np.mean([r['queries'] for r in rows]):.0f}.", ""]
    if limit is not None:
        text += [f"Sample-size ceiling: no input can be certified beyond L2 {limit:.3f} at r = 0 "
                 f"with n = {config.n} at alpha = {config.alpha} (dashed line on the plots).",
                 ""]
    transformed = [r for r in rows if r.get("notes")]
    if transformed:
        text += [f"{len(transformed)} input(s) were transformed before certification (e.g. "
                 f"{transformed[0]['id']}: {'; '.join(transformed[0]['notes'])}); see "
                 f"certify.json.", ""]
    figures = []
    for number, table in enumerate(summary["tables"]):
        block, grid_r, metrics = table["block"], table["tokens"], table["metrics"]
        suffix = f"_{block}" if block and len(layout.token_blocks) > 1 else ""
        corner = f"{layout.axis} \\ r" + (f" ({block})" if block else "")
        heading = f"## Certified accuracy (%), token block {block}" if block else \
            "## Certified accuracy (%)"
        counts = ", ".join(f"{names[c]}: {k}" for c, k in metrics["class_counts"].items())
        text += [heading, "", f"Labelled inputs per class: {counts}.", "",
                 "All labelled inputs:", "",
                 tables.markdown_table(metrics["accuracy"], layout.continuous, grid_r, corner),
                 "", "Balanced (mean over classes of the per-class rate):", "",
                 tables.markdown_table(metrics["balanced"], layout.continuous, grid_r, corner),
                 ""]
        for c, values in metrics["per_class"].items():
            if metrics["class_counts"][c]:
                what = "certified recall" if config.rule == "majority" else \
                    ("flag certified (evasion direction)" if c == config.flagged_class
                     else "certified not flagged")
                text += [f"Class {names[c]} ({what}):", "",
                         tables.markdown_table(values, layout.continuous, grid_r, corner), ""]
        if metrics["constant_class"] is not None:
            text += [f"Reference: the constant classifier that always answers "
                     f"{names[metrics['constant_class']]} is 'certified' everywhere at "
                     f"{100 * metrics['constant_accuracy']:.1f}% accuracy and "
                     f"{100 * metrics['constant_balanced']:.1f}% balanced accuracy.", ""]
        with open(folder / f"certified_accuracy{suffix}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([layout.axis] + [f"r={r}" for r in grid_r])
            for x, values in zip(layout.continuous, metrics["accuracy"], strict=True):
                writer.writerow([x] + [f"{v:.4f}" for v in values])
        if labelled and number < 4:
            figures.append(plots.run_curves(
                rows, table, layout, folder / f"curves{suffix}.png", title, names, limit).name)
            figures.append(plots.accuracy_heatmap(
                metrics["accuracy"], folder / f"heatmap{suffix}.png", title,
                eps_grid=layout.continuous, token_grid=grid_r).name)
    text += [f"![{f}]({f})" for f in figures]
    write_tsv(folder / "certify.tsv", rows)
    write_json(folder / "certify.json", rows)
    text += ["", "Per-input exports (every input, labelled or not, with its id and time): "
             "certify.tsv (idx label predict radius correct time id ...), certify.json.", "",
             "Configuration: " + ", ".join(f"{k}={v}" for k, v in
                                           sorted(config.to_dict().items()))]
    (folder / "REPORT.md").write_text("\n".join(text) + "\n")
    return folder


def _class_names(config: RunConfig) -> list[str]:
    names = [str(c) for c in range(config.num_classes)]
    for name, value in (config.label_map or {}).items():
        names[value] = f"{value} ({name})"
    return names
