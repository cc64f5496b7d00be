"""Report of a stored run: per-class and balanced certified accuracy over a grid of budgets,
the constant-classifier reference, the sample-size ceiling, plots and per-input exports.

Everything is recomputed from the stored rows (the row format of
:func:`hybridcert.smoothing.result_row`) and the stored configuration.
"""

from __future__ import annotations

import csv
import json
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
        self.sigmas = {n: b.level for n, b in noises.items() if b.continuous}
        self.token_blocks = tuple(n for n, b in noises.items() if b.tokens)
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


def token_ceilings(config: RunConfig, details: dict) -> dict[str, int]:
    """Per noised token block (others unchanged, no image change): the largest token budget
    the run's sample size can certify at all (every draw agreeing), from the resolved noise
    stored with the run."""
    from hybridcert.certificate import MAJORITY, Rule, certified_frontier
    from hybridcert.noise import noise_from_spec

    if config.rule == "benign":
        return {}
    rule = MAJORITY if config.rule == "majority" else Rule.flag(float(config.threshold))
    best = config.alpha ** (1.0 / config.n)
    out = {}
    for block in details.get("blocks", []):
        if block.get("kind") != "tokens" or not block.get("noise"):
            continue
        discrete = noise_from_spec(block["noise"])
        frontier = certified_frontier(best, sigma=None, discrete=discrete, rule=rule,
                                      max_tokens=config.max_tokens)
        out[block["name"]] = int(frontier.max_tokens[0])
    return out


def ceiling(config: RunConfig) -> float | None:
    """Largest L2 radius (r = 0, one Gaussian block) that the run's sample size can certify at
    all: every draw agreeing gives a bound of at most ``alpha ** (1 / n)``."""
    noises = config.block_noises()
    sigmas = [b.level for b in noises.values() if b.continuous]
    if len(sigmas) != 1:
        return None
    best = config.alpha ** (1.0 / config.n)
    base = 0.5 if config.rule == "majority" else float(config.threshold)
    if config.rule == "benign":
        return None
    return max(0.0, sigmas[0] * float(ndtri(best) - ndtri(base)))


def run_summary(store_path: Path, run_id: int | None = None) -> dict:
    """Rows, configuration and per-table metrics of the stored run (the last one, or
    ``run_id``)."""
    with RunStore(store_path, readonly=True, run_id=run_id) as store:
        config_dict, version, run_id = store.config, store.library_version, store.run_id
        rows, details = store.rows(), store.details
        attack_rows = store.attack_rows()
    config = RunConfig.from_dict(config_dict)
    layout = Layout(config)
    regions = tables.rows_regions(rows, layout.token_blocks, layout.sigmas)
    out = {"config": config, "version": version, "run_id": run_id, "rows": rows,
           "layout": layout, "tables": [], "details": details,
           "targets": target_metrics(rows, config.num_classes), "attacks": attack_rows}
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


def target_metrics(rows: list[dict], num_classes: int) -> list[dict]:
    """Per target region (decision mode, or ``--target`` in fixed mode): the share of
    labelled inputs correct and certified there, overall, per class and balanced."""
    if not rows or not rows[0].get("targets"):
        return []
    out = []
    for j, target in enumerate(rows[0]["targets"]):
        mask = np.array([[bool(r["targets"][j]["certified"])] for r in rows])
        metrics = tables.class_metrics(rows, mask, num_classes)
        out.append({"budget": target["budget"], "accuracy": float(metrics["accuracy"][0]),
                    "balanced": float(metrics["balanced"][0]),
                    "per_class": {c: float(v[0]) for c, v in metrics["per_class"].items()},
                    "counts": metrics["class_counts"]})
    return out


def image_spaces(details: dict | None) -> dict[str, str]:
    """Per image block of the stored model, where its noise (so a certified L2 radius) lives:
    the pixels the model sees, or raw pixels before a tiled processor."""
    images = ((details or {}).get("model") or {}).get("images") or {}
    return {name: str(info["space"]) for name, info in images.items()
            if isinstance(info, dict) and info.get("space")}


def write_report(store_path: Path, folder: Path, run_id: int | None = None) -> Path:
    """Write REPORT.md, CSV tables, plots and per-input exports of a stored run.

    Raises ValueError (nothing written) for a run that holds no results yet."""
    summary = run_summary(store_path, run_id)
    config, rows, layout = summary["config"], summary["rows"], summary["layout"]
    if not rows:
        raise ValueError(f"run {summary['run_id']} of {store_path} is incomplete: it holds no "
                         f"results yet (stopped before its first input finished); run the same "
                         f"`hybridcert certify` command again to resume it")
    folder.mkdir(parents=True, exist_ok=True)
    names = _class_names(config)
    noise_text = ", ".join(f"{n} {b.spec()}" for n, b in config.block_noises().items())
    model_text = config.model or f"checkpoint {config.checkpoint}"
    if config.model_args:
        model_text += "(" + ", ".join(f"{k}={json.dumps(v)}" for k, v in
                                      config.model_args.items()) + ")"
    rule_text = "majority vote" if config.rule == "majority" else \
        f"detector ({config.rule}, tau = {config.threshold:g}, flagged class " \
        f"{names[config.flagged_class]})"
    title = f"{model_text} | {noise_text} | {rule_text}"
    limit = ceiling(config)
    labelled = [r for r in rows if r["label"] is not None]
    abstain = float(np.mean([r["predict"] == -1 for r in rows])) if rows else 0.0
    times = np.array([r["time"] for r in rows]) if rows else np.zeros(0)
    threat = f"threat {config.threat}" if layout.token_blocks else "no token threat"
    text = [f"# Run {summary['run_id']} ({store_path})", "",
            f"hybridcert {summary['version']}; {len(rows)} inputs ({len(labelled)} labelled); "
            f"abstain rate {100 * abstain:.1f}%.", "",
            f"Model: {model_text}. Noise: {noise_text}. Rule: {rule_text}. Mode {config.mode}, "
            f"n = {config.n} (cap in sequential modes), alpha = {config.alpha}, {threat}.", ""]
    spaces = image_spaces(summary["details"])
    if spaces:
        text += ["Image radii: " + "; ".join(f"the L2 radius of block {name} is in {space}"
                                             for name, space in spaces.items()) + ".", ""]
    silent = [b["name"] for b in summary["details"].get("blocks", [])
              if b.get("kind") == "tokens" and b.get("noise") is None]
    if silent:
        where = "" if not layout.token_blocks else f" in {', '.join(silent)}"
        text += [f"Tokens: none certified{where}: the model reads text block(s) "
                 f"{', '.join(silent)}, which this run did not noise (no_text_noise, or noise "
                 f"none); no change of their tokens is covered by any certificate below.", ""]
    if times.size:
        text += [f"Per-input time: median {np.median(times):.3f} s, max {times.max():.3f} s; "
                 f"queries per input: mean {np.mean([r['queries'] for r in rows]):.0f}.", ""]
    if limit is not None:
        text += [f"Sample-size ceiling: no input can be certified beyond L2 {limit:.3f} at r = 0 "
                 f"with n = {config.n} at alpha = {config.alpha} (dashed line on the plots).",
                 ""]
    tokens_cap = token_ceilings(config, summary["details"])
    if tokens_cap:
        text += ["Token ceiling: with that sample size, no input can be certified beyond "
                 + ", ".join(f"r = {r} changed tokens of {name}" if r >= 0
                             else f"any change of {name} (not even r = 1)"
                             for name, r in tokens_cap.items())
                 + " (at eps = 0, other blocks unchanged).", ""]
    if summary["targets"]:
        text += ["## Target regions", "", "Share of labelled inputs whose decision is correct "
                 "and certified in each target region (every block's budget at once):", "",
                 "| target | all | balanced | " + " | ".join(names) + " |",
                 "|---" * (3 + len(names)) + "|"]
        for t in summary["targets"]:
            budget = ", ".join(f"{k} {v:g}" for k, v in t["budget"].items() if v) or \
                "no change"
            per = " | ".join("-" if t["counts"][c] == 0 else f"{100 * t['per_class'][c]:.1f}"
                             for c in range(config.num_classes))
            text.append(f"| {budget} | {100 * t['accuracy']:.1f} | {100 * t['balanced']:.1f} "
                        f"| {per} |")
        text.append("")
    text += _endings(rows, summary["targets"])
    if config.rule != "majority" and labelled:
        benign = [r for r in labelled if r["label"] != config.flagged_class]
        flagged = [r for r in labelled if r["label"] == config.flagged_class]
        if benign:
            rate = np.mean([r.get("decision") == "flag" for r in benign])
            text += [f"False-flag rate: {100 * rate:.1f}% of the {len(benign)} labelled inputs "
                     f"of other classes are flagged (certified at zero change)."]
        if flagged:
            recall = np.mean([r.get("decision") == "flag" for r in flagged])
            text += [f"Flag recall: {100 * recall:.1f}% of the {len(flagged)} labelled inputs "
                     f"of class {names[config.flagged_class]} are flagged with a "
                     f"certificate."]
        text.append("")
    transformed = [r for r in rows if r.get("notes")]
    if transformed:
        text += [f"{len(transformed)} input(s) carry notes (a change before certification, or "
                 f"a target beyond the text's noisable positions; e.g. "
                 f"{transformed[0]['id']}: {'; '.join(transformed[0]['notes'])}); see "
                 f"certify.json.", ""]
    figures = []
    for number, table in enumerate(summary["tables"]):
        block, grid_r, metrics = table["block"], table["tokens"], table["metrics"]
        suffix = f"_{block}" if block and len(layout.token_blocks) > 1 else ""
        corner = f"{layout.axis} \\ r" + (f" ({block})" if block else "")
        others = [b for b in layout.token_blocks if b != block]
        heading = f"## Certified accuracy (%), token block {block}" + (
            f" (other token blocks unchanged: {', '.join(others)})" if others else "") \
            if block else "## Certified accuracy (%)"
        counts = ", ".join(f"{names[c]}: {k}" for c, k in metrics["class_counts"].items())
        text += [heading, "", f"Labelled inputs per class: {counts}.", "",
                 "All labelled inputs:", "",
                 tables.markdown_table(metrics["accuracy"], layout.continuous, grid_r, corner),
                 "", "Balanced (mean over classes of the per-class rate):", "",
                 tables.markdown_table(metrics["balanced"], layout.continuous, grid_r, corner),
                 ""]
        for c, values in metrics["per_class"].items():
            if config.rule == "flag" and c != config.flagged_class:
                text += [f"Class {names[c]}: the flag side certifies only flags, so inputs of "
                         f"this class count only as false flags (see the false-flag rate "
                         f"below).", ""]
                continue
            if config.rule == "benign" and c == config.flagged_class:
                continue
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
    if summary["attacks"]:
        text += ["", *attack_section(summary["attacks"], folder / "attacks.csv")]
    write_tsv(folder / "certify.tsv", rows)
    write_json(folder / "certify.json", rows)
    text += ["", "Per-input exports (every input, labelled or not, with its id and time): "
             "certify.tsv (idx label predict radius correct time id ...), certify.json.", "",
             "Configuration: " + ", ".join(f"{k}={v}" for k, v in
                                           sorted(config.to_dict().items()))]
    (folder / "REPORT.md").write_text("\n".join(text) + "\n")
    return folder


#: Columns of attacks.csv (one row per attacked input and attack).
ATTACK_COLUMNS = ("id", "kind", "factor", "budget", "certified_budget", "quantity",
                  "estimate_before", "lower_before", "upper_before", "estimate_after",
                  "lower_after", "upper_after", "outcome", "alarm", "tokens_changed", "l2_used",
                  "n", "alpha", "samples", "steps", "seed")


def attack_section(attacks: list[dict], csv_path: Path) -> list[str]:
    """REPORT.md lines of the stored ``hybridcert attack`` results, and attacks.csv."""
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ATTACK_COLUMNS)
        for row in attacks:
            writer.writerow([json.dumps(row[c]) if c == "budget" else row[c]
                             for c in ATTACK_COLUMNS])
    text = ["## Attacks", "", "The joint attack (PGD on the image and token substitution, "
            "adaptive to the noise) on each certified input, at a budget inside its certified "
            "region (any flip there is a soundness alarm) or beyond it; the smoothed "
            "estimate before and after on fresh noise draws, with two-sided Clopper-Pearson "
            "bounds.", ""]
    alarms = [r for r in attacks if r["alarm"]]
    if alarms:
        text += [f"**SOUNDNESS ALARM: {len(alarms)} decision(s) flipped inside their "
                 f"certified regions ({', '.join(r['id'] for r in alarms[:10])}).**", ""]
    kinds = sorted({(r["kind"], r["factor"]) for r in attacks}, key=lambda k: (k[0] != "inside",
                                                                               k[1]))
    for kind, factor in kinds:
        mine = [r for r in attacks if (r["kind"], r["factor"]) == (kind, factor)]
        outcomes = {o: sum(r["outcome"] == o for r in mine)
                    for o in ("flipped", "held", "undecided")}
        text.append(f"- {_attack_name(kind, factor)}: {len(mine)} input(s), "
                    f"{outcomes['flipped']} flipped, {outcomes['held']} held, "
                    f"{outcomes['undecided']} undecided.")
    text += ["", "| input | attack | budget | estimate before | after | tokens changed | "
             "L2 used | outcome |", "|---" * 8 + "|"]
    for row in attacks[:50]:
        budget = ", ".join(f"{k} L2 {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in row["budget"].items())
        text.append(f"| {row['id']} | {_attack_name(row['kind'], row['factor'])} | {budget} | "
                    f"{row['estimate_before']:.3f} [{row['lower_before']:.3f}, "
                    f"{row['upper_before']:.3f}] | {row['estimate_after']:.3f} "
                    f"[{row['lower_after']:.3f}, {row['upper_after']:.3f}] | "
                    f"{row['tokens_changed']} | {row['l2_used']:.3g} | "
                    f"{'**ALARM** ' if row['alarm'] else ''}{row['outcome']} |")
    if len(attacks) > 50:
        text.append(f"| ... {len(attacks) - 50} more in attacks.csv | | | | | | | |")
    return text + [""]


def _attack_name(kind: str, factor: float) -> str:
    return "inside" if kind == "inside" else f"beyond x{factor:g}"


def ending_counts(rows: list[dict]) -> list[dict]:
    """How the answers ended: for the class at the zero budget, then each target region,
    ``{"what", "counts": {status: inputs}, "median_at": {status: median decided_at}}``."""
    items = [("class (zero budget)", [(r.get("status"), r.get("decided_at")) for r in rows])]
    n_targets = len(rows[0].get("targets") or []) if rows else 0
    for j in range(n_targets):
        items.append((f"target {j}", [(r["targets"][j].get("status"),
                                       r["targets"][j].get("decided_at")) for r in rows]))
    out = []
    for what, pairs in items:
        counts, at = {}, {}
        for status, when in pairs:
            status = status or "unknown"
            counts[status] = counts.get(status, 0) + 1
            if when is not None:
                at.setdefault(status, []).append(when)
        out.append({"what": what, "counts": counts,
                    "median_at": {k: float(np.median(v)) for k, v in at.items()}})
    return out


def _endings(rows: list[dict], targets: list[dict]) -> list[str]:
    """The report's "How the answers ended" section (inputs per status, median draw)."""
    if not rows:
        return []
    order = ("certified", "refuted", "gave_up", "cap")
    lines = ["## How the answers ended", "",
             "Inputs per status, with the median draw at which each was decided. certified: "
             "the lower bound crossed; refuted: false at the stopping rule's futility level "
             "(its upper bound at that level fell below the threshold p*; a reason, not a "
             "claim at alpha); gave_up: stopped open by a cost rule (the price, or every "
             "target settled first); cap: not certifiable within the draw cap, or the cap "
             "(fixed n: the sample) reached.", "",
             "| answer | " + " | ".join(order) + " |", "|---" * (1 + len(order)) + "|"]
    for j, item in enumerate(ending_counts(rows)):
        what = item["what"]
        if j and j - 1 < len(targets):
            what = ", ".join(f"{k} {v:g}" for k, v in targets[j - 1]["budget"].items() if v) \
                or "no change"
        cells = [f"{item['counts'][k]} (at {item['median_at'][k]:,.0f})"
                 if item["counts"].get(k) else "0" for k in order]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return lines + [""]


def _class_names(config: RunConfig) -> list[str]:
    names = [str(c) for c in range(config.num_classes)]
    for name, value in (config.label_map or {}).items():
        names[value] = f"{value} ({name})"
    return names
