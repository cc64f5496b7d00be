"""REPORT.md, plots and results.json of a benchmark run (rewritten after every unit)."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from hybridcert.bench import attack_eval, curves
from hybridcert.bench.metrics import rate_table
from hybridcert.bench.store import json_default, load_unit
from hybridcert.bench.threats import branch_noise, noise_for
from hybridcert.reports import plots
from hybridcert.reports.tables import EPS_GRID, TOKEN_GRID, markdown_interval_table
from hybridcert.smoothing.core import lower_confidence_bound

SWEEP_CELLS = [(0.0, 0), (0.25, 0), (0.5, 0), (0.0, 1), (0.25, 1), (0.0, 2), (0.5, 2)]
SETTING_TITLES = {"detector": "detector (flag side, tau for a <= 5 % validation false-flag rate)",
                  "majority": "majority vote"}


def _cell(e: float, r: int) -> int:
    return EPS_GRID.index(e) * len(TOKEN_GRID) + TOKEN_GRID.index(r)


def _groups(results: dict, units: dict) -> dict:
    """(level index, threat) -> list of (seed, unit), seeds in order."""
    out: dict = {}
    for name, info in results["units"].items():
        unit = units.get(name)
        if unit is None:
            continue
        out.setdefault((info["level"], info["threat"]), []).append((info["seed"], unit))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in sorted(out.items())}


def group_metrics(members: list, replicates: int) -> dict:
    """Rates with intervals of one (level, threat) over its seeds."""
    units = [u for _, u in members]
    labels = np.asarray(units[0]["labels"])
    for u in units[1:]:
        if u["ids"] != units[0]["ids"]:
            raise ValueError("units of one level must certify the same inputs")
    safe, unsafe = labels == 0, labels == 1
    m: dict = {"seeds": [s for s, _ in members], "inputs": int(labels.size),
               "unsafe": int(unsafe.sum()), "safe": int(safe.sum())}

    def stack(key, correct_of=None, among=None):
        arrays = []
        for u in units if among is None else among:
            a = np.asarray(u["outcomes"][key], dtype=bool)
            if correct_of is not None:
                pred = np.asarray(u["labels_of"][correct_of] if correct_of in u["labels_of"]
                                  else u["baseline_labels"][correct_of])
                a = a & (pred == labels)[:, None]
            arrays.append(a)
        return np.stack(arrays)

    if "detector" in units[0]["outcomes"]:
        det = stack("detector")
        m["detector"] = rate_table(det[:, unsafe], replicates)
        m["false_flag"] = rate_table(det[:, safe][:, :, :1], replicates)
        for method in ("sequential", "per_modality"):
            key = f"detector_{method}"
            if key in units[0]["outcomes"]:
                m[key] = rate_table(stack(key)[:, unsafe], replicates)
                if method == "per_modality":
                    over = stack(key) & ~det
                    m["detector_overclaims"] = _overclaims(over)
        m["taus"] = [u["calibration"]["tau"] for u in units]
        m["val_rates"] = [u["calibration"]["rate"] for u in units]
        m["feasible"] = [u["calibration"].get("feasible", True) for u in units]
        m["test_rates"] = det[:, safe, 0].mean(1).tolist()
        slices = np.asarray(units[0].get("slices") or [])
        m["slices"], m["slice_false_flags"] = {}, {}
        for name in ("seen", "heldout", "noto"):
            mask = (slices == name) & unsafe if slices.size else np.zeros(0, bool)
            if mask.any():
                m["slices"][name] = rate_table(det[:, mask][:, :, :1], replicates)
            benign = (slices == name) & safe if slices.size else np.zeros(0, bool)
            if benign.any():
                m["slice_false_flags"][name] = rate_table(det[:, benign][:, :, :1], replicates)
    voted = [u for u in units if "majority" in u["outcomes"]]     # majority_seeds
    if voted:
        m["majority_seeds"] = [s for s, u in members if "majority" in u["outcomes"]]
        maj = stack("majority", "majority", voted)
        m["majority"] = rate_table(maj, replicates)
        m["majority_safe"] = rate_table(maj[:, safe], replicates)
        m["majority_unsafe"] = rate_table(maj[:, unsafe], replicates)
        # balanced: each class weighted by half over its own size (a mean over inputs of the
        # reweighted indicators is the mean of the two per-class rates)
        weight = np.where(unsafe, 0.5 / max(unsafe.sum(), 1), 0.5 / max(safe.sum(), 1))
        m["majority_balanced"] = rate_table(maj * (weight * labels.size)[None, :, None],
                                            replicates)
        if "majority_sequential" in voted[0]["outcomes"]:
            m["majority_sequential"] = rate_table(
                stack("majority_sequential", "majority_sequential", voted), replicates)
            over = stack("majority_per_modality", among=voted) & ~np.stack(
                [np.asarray(u["outcomes"]["majority"], dtype=bool) for u in voted])
            m["majority_overclaims"] = _overclaims(over)
    m["stopping"] = {}
    for setting in ("detector", "majority"):
        having = [u for u in units if f"{setting}_stopping" in u["outcomes"]]
        if having:
            m["stopping"][setting] = _stopping(having, setting)
    m["mean_draws"] = float(np.mean([np.mean(u["drawn"]) for u in units]))
    m["seconds"] = float(np.sum([u["seconds"] for u in units]))
    m["draws_per_s"] = float(np.sum([np.sum(u["drawn"]) for u in units]) / max(m["seconds"], 1))
    m["blank"] = {}
    m["ceiling"] = {}
    for setting in ("detector", "majority"):
        having = [u for u in units if setting in u.get("ceiling", {}) and
                  setting in u.get("thresholds", {})]
        if not having:
            continue
        beyond = []
        for u in having:
            p = u["ceiling"][setting]["p"]
            thr = np.array([np.inf if t is None else t
                            for t in u["thresholds"][setting]["joint"]])
            # NaN: not even the zero budget (tau itself) is certifiable at this sample size
            beyond.append(thr > p if np.isfinite(p) else np.ones(thr.shape, bool))
        m["blank"][setting] = np.all(beyond, axis=0)
        eps = np.array([u["ceiling"][setting]["eps"] for u in having], dtype=float)
        m["ceiling"][setting] = {"p": [u["ceiling"][setting]["p"] for u in having],
                                 "eps": _column_max(eps)}
    return m


@lru_cache(maxsize=32)
def _noise(level: tuple, threat: str, slots: int, image: bool = True, text: bool = True):
    """One noise per (level, threat, blocks noised): it remembers its thresholds."""
    return noise_for(level, threat, slots, image=image, text=text)


#: Slices of the test split (docs/DATASET.md) and their names in the report.
SLICE_NAMES = {"all": "all", "seen": "seen sprites", "heldout": "held-out sprites",
               "noto": "held-out style (Noto)"}
#: The false-flag rate up to which a detector is called usable in the report's statement on
#: token robustness.
USABLE_RATE = 0.10


def _shaped(table: dict, shape: tuple) -> dict:
    """A rate table over flattened cells, reshaped to ``shape`` (per-seed arrays too)."""
    out = {}
    for k, v in table.items():
        if k == "method":
            out[k] = v
        elif k.startswith("per_seed"):
            out[k] = np.asarray(v).reshape((-1,) + shape)
        else:
            out[k] = np.asarray(v).reshape(shape)
    return out


def curve_metrics(members: list, cfg, key: tuple) -> dict | None:
    """Operating curves of the detector of one (level, threat) over its seeds, from the
    counts its fixed-n units store (bench/curves.py): certified unsafe recall and certified
    benign false-flag rate at every tau of the grid and budget of
    :data:`~hybridcert.bench.curves.CURVE_BUDGETS`, per test slice; the same at each seed's
    taus for 1 %, 5 % and 10 % validation false flags; and where token budgets certify
    nothing at any usable tau.  None when a unit is not at a fixed n."""
    li, threat = key
    units = [u for _, u in members if "detector" in u.get("rows", {})]
    if not units or len(units) != len(members):
        return None
    noise = _noise(tuple(cfg.levels[li]), threat, cfg.append_slots)
    alpha = cfg.settings.alpha
    bounds = [curves.unit_bounds(u, noise, alpha) for u in units]
    if any(b is None for b in bounds):
        return None
    n = curves.fixed_counts(units[0])[1]
    labels = np.asarray(units[0]["labels"])
    slices = np.asarray(units[0].get("slices") or [""] * labels.size)
    calibrated = [float(u["calibration"]["tau"]) for u in units]
    val_taus = [curves.validation_taus(u["calibration"]) for u in units]
    extra = calibrated + [v[r]["tau"] for v in val_taus if v for r in v]
    taus = curves.tau_grid(extra)
    budgets = curves.CURVE_BUDGETS
    cert = np.stack([curves.certified(b, taus) for b in bounds])        # (S, T, B, I)
    seeds, shape = len(units), (len(taus), len(budgets))
    flat = cert.reshape(seeds, -1, labels.size).transpose(0, 2, 1)       # (S, I, T * B)
    masks = {name: (np.ones(labels.size, bool) if name == "all" else slices == name)
             for name in SLICE_NAMES}
    out: dict = {"taus": taus, "budgets": [list(b) for b in budgets], "n": n,
                 "seeds": [s for s, u in members], "calibrated": calibrated,
                 "ceiling": curves.tau_ceiling(noise, n, alpha, budgets), "slices": {}}
    for name, mask in masks.items():
        for cls, what in ((1, "recall"), (0, "false_flags")):
            chosen = mask & (labels == cls)
            if chosen.any():
                out["slices"].setdefault(name, {})[what] = _shaped(
                    rate_table(flat[:, chosen], cfg.bootstrap), shape)
    if all(v is not None for v in val_taus):
        out["points"] = {}
        for rate in curves.VAL_RATES:
            chosen_taus = [v[rate]["tau"] for v in val_taus]
            at = np.stack([curves.certified(b, [t])[0] for b, t in
                           zip(bounds, chosen_taus, strict=True)]).transpose(0, 2, 1)
            point = {"tau": chosen_taus, "val_rate": [v[rate]["rate"] for v in val_taus],
                     "feasible": [v[rate]["feasible"] for v in val_taus],
                     "val_by_style": {style: [curves.validation_rate(u["calibration"], t, style)
                                              for u, t in zip(units, chosen_taus, strict=True)]
                                      for style in ("openmoji", "noto")},
                     "recall": {}, "false_flags": {}}
            for name, mask in masks.items():
                for cls, what in ((1, "recall"), (0, "false_flags")):
                    chosen = mask & (labels == cls)
                    if chosen.any():
                        point[what][name] = rate_table(at[:, chosen], cfg.bootstrap)
            out["points"][rate] = point
        out["tokens"] = _token_vacuity(cert, taus, budgets, units, out["ceiling"])
        out["calibration_error"] = {
            "rate": cfg.false_flag_rate,
            "per_seed": [curves.calibration_bootstrap(b, labels, u["calibration"],
                                                      cfg.false_flag_rate, cfg.bootstrap,
                                                      seed=cfg.run_seed)
                         for b, u in zip(bounds, units, strict=True)]}
    return out


def _token_vacuity(cert: np.ndarray, taus, budgets, units, ceiling) -> dict:
    """Where token budgets certify nothing: per seed, whether any test input is certified at
    a budget with r >= 1 at some tau with at most :data:`USABLE_RATE` validation false flags,
    the largest tau at which any is, and the benign validation share flagged there; and the
    validation share flagged at the largest tau any model could certify at r = 1 with n
    draws."""
    token = [j for j, (_, r) in enumerate(budgets) if r >= 1]
    one = budgets.index((0.0, 1))
    out: dict = {"usable_rate": USABLE_RATE, "budgets": [list(budgets[j]) for j in token],
                 "any_usable": [], "largest_tau": [], "largest_tau_val_rate": [],
                 "usable_from": [], "ceiling_r1": float(ceiling[one]),
                 "ceiling_r1_val_rate": []}
    for s, unit in enumerate(units):
        cal = unit["calibration"]
        rates = np.array([curves.validation_rate(cal, t) for t in taus])
        usable = rates <= USABLE_RATE
        hit = cert[s][:, token, :].any(axis=(1, 2))                      # per tau
        out["any_usable"].append(bool((hit & usable).any()))
        out["usable_from"].append(float(taus[usable].min()) if usable.any() else float("nan"))
        top = float(taus[hit].max()) if hit.any() else float("nan")
        out["largest_tau"].append(top)
        out["largest_tau_val_rate"].append(curves.validation_rate(cal, top)
                                           if hit.any() else float("nan"))
        out["ceiling_r1_val_rate"].append(curves.validation_rate(cal, float(ceiling[one])))
    return out


def _stopping(units: list, setting: str) -> dict:
    """The sequential rule (``<setting>_stopping``) against fixed n on the same draws: per
    seed, mean draws, certified (input, cell) decisions of each, and those only one made (a
    majority decision counts as the same only for the same class)."""
    key = f"{setting}_stopping"
    out: dict = {"n": [], "queries": [], "fixed": [], "sequential": [], "lost": [],
                 "gained": []}
    for u in units:
        fixed = np.asarray(u["outcomes"][setting], bool)
        stop = np.asarray(u["outcomes"][key], bool)
        same = (np.asarray(u["labels_of"][setting]) ==
                np.asarray(u["baseline_labels"][key]))[:, None]
        out["n"].append(int(np.max(u["drawn"])) if len(u["drawn"]) else 0)
        out["queries"].append(float(u["queries"][key]))
        out["fixed"].append(int(fixed.sum()))
        out["sequential"].append(int(stop.sum()))
        out["lost"].append(int((fixed & ~(stop & same)).sum()))
        out["gained"].append(int((stop & ~(fixed & same)).sum()))
    return out


def _ceiling_note(eps_c: float, ceiling: dict, m: dict) -> str:
    bounds = ", ".join(f"{p:.5f}" if np.isfinite(p) else "none" for p in ceiling.get("p", []))
    if np.isfinite(eps_c):
        return f"Sample-size ceiling at r = 0: eps {eps_c:.3f} (largest certifiable bound " \
               f"{bounds})."
    return f"tau ({', '.join(f'{t:.5f}' for t in m['taus'])}) is at or above what the " \
           f"draws per input can certify (largest certifiable bound per seed: {bounds}; " \
           f"'none': not even tau): nothing can be certified at this sample size."


def _column_max(values: np.ndarray) -> np.ndarray:
    """Largest finite value per column (NaN where a column has none)."""
    finite = np.where(np.isfinite(values), values, -np.inf).max(axis=0)
    return np.where(np.isfinite(finite), finite, np.nan)


def _overclaims(over: np.ndarray) -> dict:
    """Per seed: inputs with at least one over-claimed cell, and over-claimed (input, cell)
    pairs."""
    return {"inputs": over.any(2).sum(1).tolist(), "cells": over.sum((1, 2)).tolist(),
            "total": int(over.shape[1])}


def _grid(table: dict) -> tuple:
    return tuple(np.asarray(table[k]).reshape(len(EPS_GRID), len(TOKEN_GRID))
                 for k in ("mean", "low", "high"))


def _pct(table, index=None, seeds: bool = True) -> str:
    """``mean [low, high]`` in %, followed by the seeds' own values ``(a / b / c)`` when
    there are two seeds or more (``seeds``)."""
    mean, low, high = (np.asarray(table[k]).ravel() for k in ("mean", "low", "high"))
    i = 0 if index is None else index
    if np.isnan(mean[i]):
        return "-"
    text = f"{100 * mean[i]:.1f} [{100 * low[i]:.1f}, {100 * high[i]:.1f}]"
    per = table.get("per_seed") if isinstance(table, dict) else None
    if seeds and per is not None:
        per = np.asarray(per, dtype=float).reshape(np.asarray(per).shape[0], -1)
        if per.shape[0] > 1:
            text += " (" + " / ".join(f"{100 * v:.1f}" for v in per[:, i]) + ")"
    return text


def _seed_pct(table, s: int, index: int = 0) -> str:
    """Seed ``s``'s own rate with its 95 % bootstrap interval over inputs."""
    values = [np.asarray(table[k], dtype=float).reshape(np.asarray(table[k]).shape[0], -1)[s, index]
              for k in ("per_seed", "per_seed_low", "per_seed_high")]
    if np.isnan(values[0]):
        return "-"
    return f"{100 * values[0]:.1f} [{100 * values[1]:.1f}, {100 * values[2]:.1f}]"


def _price(price) -> str:
    return "none" if price is None else f"{price:g}"


def _fixed(cfg) -> bool:
    return getattr(cfg.settings, "mode", "sequential") == "fixed"


def _draws(cfg) -> str:
    """How the draws per input are named: a fixed n or a sequential rule's cap."""
    return "fixed n" if _fixed(cfg) else "n_max"


def _level_name(cfg, li: int) -> str:
    sigma, keep = cfg.levels[li]
    return f"sigma {sigma:g}, keep {keep:g}"


def write(results: dict, units: dict, cfg, final: bool = True) -> Path:
    """Write REPORT.md, the plots and results.json to ``cfg.out`` (``final=False``: a report
    rewritten during the run, without the operating-curve figures, which take seconds each;
    the tables are complete)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in results["units"]:
        if units.get(name) is not None:
            units[name]["slices"] = results["inputs"]["slices"]
    groups = _groups(results, units)
    metrics = {key: group_metrics(members, cfg.bootstrap) for key, members in groups.items()}
    for key, members in groups.items():
        found = curve_metrics(members, cfg, key)
        if found is not None:
            metrics[key]["curves"] = found
    figures = _figures(results, metrics, cfg, out, final)
    text = _markdown(results, metrics, cfg, figures)
    (out / "REPORT.md").write_text(text)
    compact = _compact(results, metrics)
    (out / "results.json").write_text(json.dumps(compact, indent=1, default=json_default,
                                                 allow_nan=True))
    return out / "REPORT.md"



def _compact(results: dict, metrics: dict) -> dict:
    """results.json: every aggregate (per-input data is in inputs/*.tsv)."""
    data = copy.deepcopy(results)
    for unit in data.get("baselines", {}).values():
        for key in ("image_only", "text_only"):
            if key in unit:
                unit[key] = {k: v for k, v in unit[key].items()
                             if k not in ("rows", "outcomes", "labels_of", "baseline_labels",
                                          "drawn", "ids", "labels")}
        if "and" in unit:
            for branch in unit["and"]["branches"].values():
                for k in ("rows", "outcomes", "labels_of", "baseline_labels", "drawn", "ids",
                          "labels"):
                    branch.pop(k, None)
            unit["and"].pop("outcomes", None)
    data["metrics"] = {f"level{li}_{threat}": m for (li, threat), m in metrics.items()}
    return data


# -- figures ---------------------------------------------------------------------------------
def _figures(results, metrics, cfg, out: Path, curve_figures: bool = True) -> list[str]:
    names = []
    for threat in cfg.threats:
        keys = [k for k in metrics if k[1] == threat]
        for setting in ("detector", "majority"):
            panels = []
            for key in keys:
                m = metrics[key]
                if setting not in m:
                    continue
                mean, low, high = _grid(m[setting])
                blank = np.asarray(m["blank"].get(setting, np.zeros(25)), bool).reshape(
                    mean.shape)
                mean, low, high = (np.where(blank, np.nan, a) for a in (mean, low, high))
                curves = [{"label": f"r = {r}" + (" (beyond ceiling)" if blank[:, b].all()
                                                  else ""),
                           "mean": mean[:, b], "low": low[:, b], "high": high[:, b]}
                          for b, r in enumerate(TOKEN_GRID)]
                ceiling = m["ceiling"].get(setting, {}).get("eps")
                ceilings = [] if ceiling is None else \
                    [(ceiling[b], f"r = {r}") for b, r in enumerate(TOKEN_GRID[:2])]
                tau = "" if setting != "detector" else \
                    f", tau {np.mean(m['taus']):.3f}"
                shown = m["unsafe"] if setting == "detector" else m["inputs"]
                seeds = m["seeds"] if setting == "detector" else m["majority_seeds"]
                panels.append({"title": f"{_level_name(cfg, key[0])}{tau}; seeds "
                                        f"{seeds}, {shown} inputs",
                               "x": EPS_GRID, "curves": curves, "ceilings": ceilings})
            if not panels:
                continue
            path = out / f"{setting}_{threat}.png"
            what = "certified unsafe recall" if setting == "detector" else \
                "certified accuracy (balanced test set)"
            model = f"safety filter ({cfg.text_layers} MiniLM layer + CNN), threat {threat}"
            plots.interval_curves(
                panels, path, f"{what}, {SETTING_TITLES[setting]}\n{model}; {_draws(cfg)} "
                              f"{cfg.settings.n_max:,}, alpha {cfg.settings.alpha:g}; points "
                              f"beyond the sample-size ceiling omitted",
                ylabel=what, reference=0.0 if setting == "detector" else 0.5,
                reference_label="constant classifier (detector: 0 at <= 5 % false flags)"
                if setting == "detector" else "constant classifier (50 %)")
            names.append(path.name)
    if curve_figures:
        names += _curve_figures(metrics, cfg, out)
    sweep = _sweep_figure(metrics, cfg, out)
    if sweep:
        names.append(sweep)
    base = _baseline_figure(results, metrics, cfg, out)
    if base:
        names.append(base)
    if curve_figures:
        matched = _matched_figure(results, cfg, out)
        if matched:
            names.append(matched)
    attacks = attack_eval.figure(results.get("attacks"), out)
    if attacks:
        names.append(attacks)
    return names


def _budget_name(e: float, r: int) -> str:
    return f"eps{e:g}_r{r}"


def _curve_figures(metrics, cfg, out: Path) -> list[str]:
    """One figure per threat and budget: certified unsafe recall (solid) and certified benign
    false-flag rate (dashed) against tau, a panel per test slice, a colour per level;
    dotted: the calibrated taus."""
    names = []
    for threat in cfg.threats:
        keys = [k for k in sorted(metrics) if k[1] == threat and "curves" in metrics[k]]
        if not keys:
            continue
        for b, (e, r) in enumerate(curves.CURVE_BUDGETS):
            panels = []
            for name, title in SLICE_NAMES.items():
                lines, marks = [], []
                for k, key in enumerate(keys):
                    c = metrics[key]["curves"]
                    color = f"C{k}"
                    marks += [(t, color) for t in c["calibrated"]]
                    for what, style, label in (("recall", "-", "recall"),
                                               ("false_flags", "--", "false flags")):
                        table = c["slices"].get(name, {}).get(what)
                        if table is None:
                            continue
                        lines.append({"label": f"{_level_name(cfg, key[0])}: {label}",
                                      "color": color, "style": style, "x": c["taus"],
                                      **{q: np.asarray(table[q])[:, b]
                                         for q in ("mean", "low", "high")}})
                if lines:
                    panels.append({"title": f"{title} test inputs", "x": c["taus"],
                                   "curves": lines, "marks": marks})
            if not panels:
                continue
            seeds = metrics[keys[0]]["curves"]["seeds"]
            path = out / f"curves_{threat}_{_budget_name(e, r)}.png"
            plots.tau_curves(
                panels, path, f"detector operating curves at budget (eps {e:g}, r {r}), threat "
                              f"{threat}: certified unsafe recall (solid) and certified benign "
                              f"false flags (dashed); fixed n {cfg.settings.n_max:,}, alpha "
                              f"{cfg.settings.alpha:g}, seeds {seeds}; dotted: calibrated tau")
            names.append(path.name)
    return names


def _sweep_figure(metrics, cfg, out: Path) -> str | None:
    keys = sorted(k for k in metrics if k[1] == "anywhere")
    if len(keys) < 2:
        return None
    keeps = [cfg.levels[li][1] for li, _ in keys]
    panels = []
    for setting in ("detector", "majority"):
        curves, ceilings = [], []
        for e, r in SWEEP_CELLS[:5]:
            j = _cell(e, r)
            tables = [metrics[k][setting] for k in keys]
            mean = np.array([np.asarray(t["mean"]).ravel()[j] for t in tables])
            beyond = np.array([bool(metrics[k]["blank"].get(setting, np.zeros(25))[j])
                               for k in keys])
            curves.append({"label": f"(eps {e:g}, r {r})" + (" [· beyond ceiling]"
                                                            if beyond.any() else ""),
                           "mean": np.where(beyond, np.nan, mean),
                           "low": np.where(beyond, np.nan,
                                           [np.asarray(t["low"]).ravel()[j] for t in tables]),
                           "high": np.where(beyond, np.nan,
                                            [np.asarray(t["high"]).ravel()[j] for t in tables])})
        panels.append({"title": SETTING_TITLES[setting], "x": keeps, "curves": curves,
                       "ceilings": ceilings})
    path = out / "keep_sweep.png"
    sigma = cfg.levels[0][0]
    plots.interval_curves(panels, path, f"keep-probability sweep (sigma {sigma:g}, threat "
                                        f"anywhere; gaps: cell beyond the sample-size ceiling)",
                          xlabel="token keep probability", ylabel="certified rate")
    return path.name


def _baseline_figure(results, metrics, cfg, out: Path) -> str | None:
    baselines = results.get("baselines") or {}
    if not baselines:
        return None
    cells = [(0.0, 0), (0.25, 0), (0.0, 1), (0.25, 1), (0.5, 2)]
    groups, series_values, beyond = [], {}, []
    labels = np.asarray(results["inputs"]["labels"])
    unsafe = labels == 1
    order = ["joint", "sequential composition", "per-modality (UNSOUND)", "image-only smoothing",
             "text-only smoothing", "factorized AND"]
    for li_text, base in sorted(baselines.items()):
        li = int(li_text)
        m = metrics.get((li, "anywhere"))
        if m is None:
            continue
        unit = _unit_of(results, cfg.baseline_seed, li)
        if unit is None:
            continue
        for e, r in cells:
            j = _cell(e, r)
            groups.append(f"keep {cfg.levels[li][1]:g}\n({e:g}, {r})")
            beyond.append(bool(m["blank"].get("detector", np.zeros(25))[j]))
            values = {
                "joint": np.asarray(unit["outcomes"]["detector"], bool)[unsafe, j],
                "sequential composition":
                    np.asarray(unit["outcomes"]["detector_sequential"], bool)[unsafe, j],
                "per-modality (UNSOUND)":
                    np.asarray(unit["outcomes"]["detector_per_modality"], bool)[unsafe, j],
                "image-only smoothing": _single(base["image_only"], e, r, "image")[unsafe],
                "text-only smoothing": _single(base["text_only"], e, r, "text")[unsafe]}
            if "and" in base:
                values["factorized AND"] = np.asarray(base["and"]["outcomes"], bool)[unsafe, j]
            for key in order:
                if key not in values:
                    continue
                table = rate_table(values[key][None, :, None].astype(float), cfg.bootstrap)
                series_values.setdefault(key, []).append(table)
    if not groups:
        return None
    series = []
    for key in order:
        if key not in series_values:
            continue
        tables = series_values[key]
        series.append({"label": key, "mean": [float(t["mean"][0]) for t in tables],
                       "low": [float(t["low"][0]) for t in tables],
                       "high": [float(t["high"][0]) for t in tables],
                       "hatch": "//" if "UNSOUND" in key else None})
    path = out / "baselines.png"
    plots.grouped_bars(groups, series, path,
                       f"certified unsafe recall, seed {cfg.baseline_seed}, threat anywhere: "
                       f"joint certificate vs baselines (each detector's tau for <= 5 % "
                       f"validation false flags)", ylabel="certified unsafe recall",
                       beyond=beyond, note="(beyond ceiling): the joint detector's threshold "
                                           "there exceeds what n_max draws can certify")
    return path.name


def _unit_of(results, seed, li, threat="anywhere"):

    cfg = results["config"]
    folder = Path(cfg["cache"]) / "bench" / Path(cfg["out"]).name / cfg["signature"]
    return load_unit(folder / f"seed{seed}_level{li}_{threat}.json")


def _single(unit: dict, e: float, r: int, modality: str) -> np.ndarray:
    """A one-modality unit's certified indicator at grid cell (e, r): only its own axis can
    be certified (the other modality is not noised, so no change of it is covered)."""
    cells = [tuple(c) for c in unit["cells"]]
    outcomes = np.asarray(unit["outcomes"]["detector"], bool)
    if modality == "image":
        if r != 0:
            return np.zeros(outcomes.shape[0], bool)
        return outcomes[:, cells.index((e, 0))]
    if e != 0:
        return np.zeros(outcomes.shape[0], bool)
    return outcomes[:, cells.index((0.0, r))]


def _markdown(results, metrics, cfg, figures) -> str:
    s = cfg.settings
    machine = results["machine"]
    full = len(cfg.seeds) > 1
    device = getattr(cfg, "device", "cpu")
    on = "" if device == "cpu" else f" --device {device}"
    lines = [f"# Certified image+text safety filter: benchmark report "
             f"({'full' if full else 'demo'})", "",
             f"Command: `{'make full-benchmark' if full else 'make demo'}"
             f"{f' DEVICE={device}' if on and full else ''}` "
             f"(`python -m hybridcert.bench.demo{' --full' if full else ''}{on}`). Machine: "
             f"{machine['machine']}, {machine['cores']} cores, torch {machine['torch']} with "
             f"{machine['threads']} threads, Python {machine['python']}"
             f"{f', {device}: ' + machine['device'] if 'device' in machine else ''}. "
             f"Wall time so far: "
             f"{results.get('duration_s', 0):.0f} s (training included when checkpoints were "
             f"absent; see run.log).", "",
             f"Dataset: docs/DATASET.md (v2, relational labels, balanced). Test inputs: "
             f"{len(results['inputs']['test'])}, a stratified seeded draw (slices and classes "
             f"in proportion). Filters: 1 pretrained MiniLM layer + CNN, "
             f"{cfg.n_train} training records, {cfg.epochs} epochs, trained under the noise "
             f"that certifies them; seeds {list(cfg.seeds)}. Noise levels (sigma on pixels in "
             f"[0, 1], token keep probability): "
             + ", ".join(f"({a:g}, {b:g})" for a, b in cfg.levels) + ".", "",
             (f"Certification: a fixed n = {s.n_max:,} draws per input at the 25 cells (eps "
                f"in {list(EPS_GRID)}) x (r in {list(TOKEN_GRID)}), alpha = {s.alpha}: every "
                f"claim (joint certificate, sequential composition, the per-modality check) is "
                f"read from the same count of the same draws per input (detector: one-sided "
                f"Clopper-Pearson bound at alpha on the flagged class; majority vote: the most "
                f"frequent class of those draws, bounded at alpha / 2), so cells whose "
                f"thresholds are equal get identical decisions (bench/units.py, "
                f"`certify_fixed`). The sequential rule with a price reads the first draws of "
                f"the same streams and appears only in its own table. "
                if _fixed(cfg) else
                f"Certification: sequential decisions at the 25 cells (eps in "
                f"{list(EPS_GRID)}) x (r in {list(TOKEN_GRID)}), alpha = {s.alpha}, cap n_max = "
                f"{s.n_max:,} draws per input, `{s.boundary}` boundary, price "
                f"{_price(s.price_detector)} (detector) / {_price(s.price_majority)} (majority) "
                f"draws per cell (docs/SEQUENTIAL.md). ")
             + f"Detector: "
             f"flag iff the smoothed unsafe probability is >= tau, tau chosen per filter on "
             f"{cfg.val_inputs} validation records ({cfg.val_copies} noisy copies each"
             + (f"; stratified by art style and class from the validation split and "
                f"{cfg.val_shifted} records in the test split's held-out Noto style, seen "
                f"sprites only" if getattr(cfg, "val_shifted", 0) else "")
             + f") for a "
             f"benign false-flag rate <= {100 * cfg.false_flag_rate:g} %; a test input counts "
             f"as flagged when the flag is certified. Intervals (bench/stats.py): "
             + (f"mean over the {len(cfg.seeds)} training seeds with a 95 % Student-t interval "
                f"over the seeds' rates (clipped to [0, 100] %), each seed's own rate in "
                f"parentheses; each seed's 95 % percentile bootstrap interval over the test "
                f"inputs ({cfg.bootstrap} replicates) in the per-seed tables"
                if len(cfg.seeds) > 1 else
                f"one training seed: 95 % percentile bootstrap over the test inputs "
                f"({cfg.bootstrap} replicates); the spread over training seeds is not "
                f"measured here")
             + "; at 0 % and 100 % a bootstrap interval collapses to a point: with N inputs "
             "read 0 % as below 3/N at 95 % confidence. `–`: beyond the "
             f"sample-size ceiling (no input can be certified there with {_draws(cfg)} draws, "
             f"whatever the model).", ""]
    lines += _models_section(results, metrics, cfg)
    lines += _quality_section(results, cfg)
    for threat in cfg.threats:
        lines += _headline_section(metrics, cfg, threat)
    lines += _curves_section(metrics, cfg)
    lines += _sweep_section(metrics, cfg)
    lines += _majority_section(metrics, cfg)
    lines += _baseline_section(results, metrics, cfg)
    lines += _stopping_section(metrics, cfg)
    lines += _counterexample_section(results, cfg)
    lines += attack_eval.report_lines(results.get("attacks"))
    lines += _slices_section(metrics, cfg)
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += ["## Files", "",
              "* `inputs/<unit>_detector.tsv`, `inputs/<unit>_majority.tsv`: one row per test "
              "input (`hybridcert.smoothing.write_tsv`: idx, label, predict, radius, correct, "
              "time, id, p_lower, p_upper, max_tokens, queries, radius_r0..); "
              "`inputs/<unit>_cells.tsv`: the decision of every rule at every cell, for the "
              "joint certificate and sequential composition (1 = certified) and the "
              "per-modality check (1 = claimed by this UNSOUND check, not a certificate)"
              + ("; `*_stopping`: the sequential rule on the same draws. " if _fixed(cfg)
                 else ". ") +
              "Unit `seed<S>_level<L>_<threat>`: level L of the list above.",
              "* `results.json`: every aggregate; `run.log`: the console log with timings.",
              ""]
    return "\n".join(lines) + "\n"


def _quality_section(results, cfg) -> list[str]:
    """Clean, noisy and smoothed per-class accuracy of every joint filter (test split)."""
    quality = results.get("quality", {})
    if not quality:
        return []
    lines = ["## Filters: clean, noisy and smoothed accuracy per class", "",
             f"Whole test split ({cfg.n_test:,} records, 50 % unsafe, so accuracy = balanced "
             f"accuracy; the constant classifier scores 50 %). Clean: no noise; noisy: one "
             f"noisy copy; smoothed: majority of {cfg.quality_votes} noisy copies (a point "
             f"estimate, no abstention, not a certificate). Recall of safe / unsafe, balanced "
             f"accuracy, in %.", "",
             "| level | seed | clean safe / unsafe / balanced | noisy | smoothed |",
             "|---|---|---|---|---|"]
    for seed in cfg.seeds:
        for li, level in enumerate(cfg.levels):
            name = cfg.filter_config(level, seed).name
            q = quality.get(name)
            if q is None:
                continue
            cells = []
            for mode in ("clean", "noisy", "smoothed"):
                m = q.get(mode)
                cells.append("-" if m is None else
                             f"{100 * m['safe']:.1f} / {100 * m['unsafe']:.1f} / "
                             f"{100 * m['balanced']:.1f}")
            lines.append(f"| {_level_name(cfg, li)} | {seed} | " + " | ".join(cells) + " |")
    lines += ["", "Unimodal references on the same split (docs/DATASET.md): exact ceilings "
                  "61.6 % (image alone) and 58.6 % (text alone), properties of the data "
                  "generator. Trained probes (not run by this benchmark: "
                  "`benchmarks/probes.py`, docs/benchmark/probes.log, 2026-12-06) trained at "
                  "the filter's data budget (6,000 records, 16 epochs) reached 56.9 % (the "
                  "filter's 1-layer MiniLM on text; training accuracy flat at 62.2 %) and "
                  "57.6 % (CNN, images; training accuracy 86.4 %, memorising).", ""]
    return lines


def _models_section(results, metrics, cfg) -> list[str]:
    lines = ["## Filters, thresholds and costs", "",
             "| level | threat | seed | train s | checkpoint SHA-256 | tau | validation false "
             "flags | test false flags (certified) | draws per input | certify s |",
             "|---" * 10 + "|"]
    for info in results["units"].values():
        config = cfg.filter_config(cfg.levels[info["level"]], info["seed"])
        summary = info
        m = metrics.get((info["level"], info["threat"]))
        if m is None or "taus" not in m:
            continue
        k = m["seeds"].index(info["seed"])
        train = results["training"].get(config.name, 0)
        lines.append(f"| {_level_name(cfg, info['level'])} | {info['threat']} | {info['seed']} "
                     f"| {train:.0f} | {_checkpoint(results, config.name)} | "
                     f"{m['taus'][k]:.4f} | {100 * m['val_rates'][k]:.1f}% | "
                     f"{100 * m['test_rates'][k]:.1f}% | {summary['mean_draws']:.0f} | "
                     f"{summary['seconds']:.0f} |")
    lines += ["", "train s: as recorded beside the checkpoint when it was trained (0: reused "
                  "from a run that recorded no time; see run.log of the run that trained it). "
                  "Checkpoint: the first 12 hex digits of its SHA-256 "
                  "(`hybridcert.models.fusion.checkpoint_sha256`), where it came from (the "
                  "package's committed copy or the cache) and whether it equals the committed "
                  "manifest's (src/hybridcert/models/manifest.json; 'no' means the figures that "
                  "depend on it will differ from the committed report's).", ""]
    return lines


def _checkpoint(results: dict, name: str) -> str:
    info = results.get("checkpoints", {}).get(name)
    if not info:
        return "–"
    match = {True: "matches manifest", False: "**differs from manifest**",
             None: "not in manifest"}[info["manifest"]]
    return f"{info['sha256'][:12]} ({info['source']}; {match})"


def _headline_section(metrics, cfg, threat) -> list[str]:
    keys = [k for k in metrics if k[1] == threat and "detector" in metrics[k]]
    if not keys:
        return []
    what = "substitution anywhere (every content token noised and attackable)" \
        if threat == "anywhere" else \
        f"append-suffix ({cfg.append_slots} noised slots appended after the caption; the " \
        f"attacker writes into up to r of them)"
    lines = [f"## Headline: certified unsafe recall, detector, threat {threat}", "",
             f"Threat: {what}. Cell (eps, r): share of unsafe test inputs whose flag is "
             f"certified against every change of L2 norm <= eps of the image together with r "
             f"substituted tokens; mean over seeds [95 % interval]. Reference: a constant "
             f"classifier that keeps false flags <= 5 % never flags, so it certifies 0 %.", ""]
    for key in keys:
        m = metrics[key]
        mean, low, high = _grid(m["detector"])
        blank = np.asarray(m["blank"].get("detector", np.zeros(25))).reshape(mean.shape)
        ceiling = m["ceiling"].get("detector", {})
        eps_c = ceiling.get("eps", [np.nan])[0]
        ffr = m["false_flag"]
        lines += [f"### {_level_name(cfg, key[0])}, seeds {m['seeds']}: tau "
                  + ", ".join(f"{t:.4f}" for t in m["taus"])
                  + f"; test false-flag rate {_pct(ffr)} % (validation "
                  + ", ".join(f"{100 * v:.1f}" for v in m["val_rates"]) + " %)"
                  + ("" if all(m["feasible"]) else
                     f" — the {100 * cfg.false_flag_rate:g} % target was NOT reachable on "
                     f"validation for seed(s) "
                     f"{[s for s, ok in zip(m['seeds'], m['feasible'], strict=True) if not ok]}"
                     f": their benign records are flagged at the finest resolution"), "",
                  markdown_interval_table(mean, low, high, [f"{e:g}" for e in EPS_GRID],
                                          TOKEN_GRID, "eps \\ r", blank,
                                          per_seed=m["detector"].get("per_seed")), "",
                  f"{m['unsafe']} unsafe inputs. " + _ceiling_note(eps_c, ceiling, m), ""]
        lines += _per_seed_table(m["detector"], m["seeds"], blank.ravel(),
                                 m.get("false_flag"))
    return lines


def _per_seed_table(table: dict, seeds: list, blank, false_flag=None,
                    cells=SWEEP_CELLS) -> list[str]:
    """Every seed's own value at ``cells`` with its 95 % bootstrap interval over inputs
    (and the seed's certified test false-flag rate)."""
    head = "| seed | test false flags | " if false_flag is not None else "| seed | "
    lines = ["Per seed (its own rate [95 % bootstrap interval over the test inputs]):", "",
             head + " | ".join(f"({e:g}, {r})" for e, r in cells) + " |",
             "|---" * (len(cells) + 1 + (false_flag is not None)) + "|"]
    for k, seed in enumerate(seeds):
        row = [("–" if blank[_cell(e, r)] else _seed_pct(table, k, _cell(e, r)))
               for e, r in cells]
        first = f"| {seed} | " + (f"{_seed_pct(false_flag, k)} | " if false_flag is not None
                                  else "")
        lines.append(first + " | ".join(row) + " |")
    return lines + [""]


def _curves_section(metrics, cfg) -> list[str]:
    keys = [k for k in sorted(metrics) if "detector" in metrics[k]]
    if not keys:
        return []
    with_curves = [k for k in keys if "curves" in metrics[k]]
    lines = ["## Operating curves of the detector", ""]
    if not with_curves:
        return lines + ["Not available for this run: its units are sequential decisions, whose "
                        "counts stop at a data-dependent time and carry no fixed-n bound at "
                        "another tau. The curves need certification at a fixed n "
                        "(`Settings(mode=\"fixed\")`).", ""]
    c0 = metrics[with_curves[0]]["curves"]
    budgets = [tuple(b) for b in c0["budgets"]]
    heads = " | ".join(f"({e:g}, {r})" for e, r in budgets)
    lines += [f"Read from the per-input counts of the fixed-n units above (n = {c0['n']:,} "
              f"draws per input: the same draws as every table of this report; no new "
              f"draws; bench/curves.py). An input's flag at tau is certified at a budget "
              f"(eps, r) iff the certificate engine's lower bound on its flagged probability "
              f"after any change within the budget (`hybridcert.certificate.lower_bound` of "
              f"its one-sided Clopper-Pearson bound at alpha = {cfg.settings.alpha:g}) is >= "
              f"tau: the unit's own rule at every tau. Certified unsafe recall: the share of "
              f"unsafe test inputs so certified; certified benign false-flag rate: the share "
              f"of benign test inputs so certified (flagged, and staying flagged under every "
              f"change within the budget; at (0, 0): the detector's test false-flag rate). "
              f"Taus: {curves.LOW_POINTS} log-spaced from {curves.TAU_LOW:g} to 1/2 and "
              f"{curves.HIGH_POINTS} log-spaced in 1 - tau from 1/2 to {curves.TAU_HIGH:g} "
              f"({curves.tau_grid().size} distinct), plus each seed's "
              f"calibrated tau and its taus for "
              + ", ".join(f"{100 * r:g} %" for r in curves.VAL_RATES)
              + " validation false flags. Each tau's certificate holds at alpha on its own; "
              "a tau picked from these test curves would not be a validated operating point, "
              "so the tables use taus chosen on validation (benign validation records, "
              "estimates as in the calibration above, both art styles). Figures: "
              "`curves_<threat>_eps<eps>_r<r>.png`, one per budget, a panel per test slice. "
              "Constant classifiers, for reference at every budget: always flag certifies "
              "100 % recall at 100 % false flags, never flag 0 % at 0 %; a detector whose "
              "certified recall does not exceed its certified false-flag rate does no better "
              "than a random choice between them.", ""]
    for key in with_curves:
        c = metrics[key]["curves"]
        if "points" not in c:
            lines += [f"### {_level_name(cfg, key[0])}, threat {key[1]}: the validation "
                      f"estimates were not stored (a unit from an older run): curves only in "
                      f"the figures.", ""]
            continue
        lines += [f"### {_level_name(cfg, key[0])}, threat {key[1]}, seeds {c['seeds']}", "",
                  "Certified unsafe recall (%) at each seed's tau for a validation false-flag "
                  "rate; mean over seeds [95 % interval] (per seed):", "",
                  f"| validation target | tau (per seed) | validation false flags: all; "
                  f"OpenMoji / Noto style (per seed) | {heads} |", "|---" * (len(budgets) + 3)
                  + "|"]
        for rate, point in c["points"].items():
            taus = ", ".join(f"{t:.4g}" for t in point["tau"])
            val = "; ".join(
                f"{100 * v:.1f}; {100 * point['val_by_style']['openmoji'][k]:.1f} / "
                f"{100 * point['val_by_style']['noto'][k]:.1f}"
                for k, v in enumerate(point["val_rate"]))
            if not all(point["feasible"]):
                val += " (target not reachable)"
            cells = [_pct(point["recall"]["all"], b) for b in range(len(budgets))]
            lines.append(f"| {100 * rate:g} % | {taus} | {val} | " + " | ".join(cells) + " |")
        present = [s for s in SLICE_NAMES if s != "all" and s in c["slices"]]
        lines += ["", "Per test slice at the same taus: certified test false flags and certified "
                      "unsafe recall (%) at (0, 0), and certified false flags at (0, 1) and "
                      "(0.25, 0) (all slices):", "",
                  "| validation target | false flags: " + " | ".join(
                      SLICE_NAMES[s] for s in ["all"] + present) + " | recall: "
                  + " | ".join(SLICE_NAMES[s] for s in present)
                  + " | false flags at (0, 1) | at (0.25, 0) |",
                  "|---" * (2 * len(present) + 4) + "|"]
        j01, j25 = budgets.index((0.0, 1)), budgets.index((0.25, 0))
        for rate, point in c["points"].items():
            ffs = [_pct(point["false_flags"][s], 0) if s in point["false_flags"] else "-"
                   for s in ["all"] + present]
            recs = [_pct(point["recall"][s], 0) if s in point["recall"] else "-"
                    for s in present]
            lines.append(f"| {100 * rate:g} % | " + " | ".join(ffs) + " | " + " | ".join(recs)
                         + f" | {_pct(point['false_flags']['all'], j01)} | "
                         f"{_pct(point['false_flags']['all'], j25)} |")
        lines += ["", _token_statement(c, cfg), ""]
        lines += _calibration_error_table(c, budgets)
    return lines


def _calibration_error_table(c: dict, budgets: list) -> list[str]:
    """Per seed, the calibrated operating point's rates with the interval over test inputs
    alone (tau taken as exact) beside the one that also resamples the validation data that
    chose tau (:func:`~hybridcert.bench.curves.calibration_bootstrap`)."""
    error = c.get("calibration_error")
    if not error or any(e is None for e in error["per_seed"]):
        return []
    rate = error["rate"]
    point = c.get("points", {}).get(rate)
    shown = [b for b in ((0.0, 0), (0.25, 0), (0.0, 1)) if b in budgets]

    def both(k: int, what: str, j: int) -> str:
        e = error["per_seed"][k].get(what)
        if e is None:
            return "-"
        alone = _seed_pct(point[what]["all"], k, j) if point else "-"
        return (f"{alone}; {100 * e['low'][j]:.1f}–{100 * e['high'][j]:.1f}")

    lines = [f"With tau's calibration error (seeds at their {100 * rate:g} % validation tau): "
             f"each cell gives the seed's rate [95 % interval over the test inputs alone, tau "
             f"taken as exact]; then the 95 % interval when the calibration is re-run on "
             f"resampled validation data too (benign validation records drawn with "
             f"replacement within each art style, each one's flagged count redrawn from its "
             f"binomial, tau re-chosen; then the test inputs drawn with replacement; "
             f"bench/curves.py `calibration_bootstrap`). The interval over seeds above keeps "
             f"the validation records fixed.", "",
             "| seed | tau [95 % range over validation resamples] | test false flags (0, 0) | "
             + " | ".join(f"recall ({e:g}, {r})" for e, r in shown) + " |",
             "|---" * (3 + len(shown)) + "|"]
    for k, seed in enumerate(c["seeds"]):
        e = error["per_seed"][k]
        cells = [both(k, "recall", budgets.index(b)) for b in shown]
        lines.append(f"| {seed} | {e['tau']:.4g} [{e['tau_low']:.4g}, {e['tau_high']:.4g}] | "
                     f"{both(k, 'false_flags', budgets.index((0.0, 0)))} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def _token_statement(c: dict, cfg) -> str:
    """Plain words on whether the token certificate says anything at a usable tau."""
    t = c["tokens"]
    usable = f"{100 * t['usable_rate']:g} %"
    def per_seed(values, fmt):
        return ", ".join("none" if not np.isfinite(v) else fmt.format(v) for v in values)

    budgets = ", ".join(f"({e:g}, {r})" for e, r in t["budgets"])
    ceiling = (f"With n = {c['n']:,} draws no model can certify a flag at tau > "
               f"{t['ceiling_r1']:.4f} against one substituted token; at that tau this filter "
               f"flags {per_seed(t['ceiling_r1_val_rate'], '{:.1%}')} of the benign validation "
               f"records (per seed).")
    largest = ("Largest tau at which any test input is certified at a token budget, per "
               "seed: " + per_seed(t["largest_tau"], "{:.4g}") + " (validation false flags "
               + per_seed([100 * v for v in t["largest_tau_val_rate"]], "{:.1f} %") + ").")
    if not any(t["any_usable"]):
        return (f"**The text certificate is vacuous for every usable detector here.** At no "
                f"tau with <= {usable} benign validation false flags (tau >= "
                f"{per_seed(t['usable_from'], '{:.4g}')} per seed"
                + ("; none: no tau of the grid is that low in false flags"
                   if not np.isfinite(t["usable_from"]).all() else "")
                + ") is any test input, unsafe "
                f"or benign, certified flagged at {budgets}: this detector's certificate "
                f"covers image changes only. {ceiling} {largest}")
    seeds = [s for s, ok in zip(c["seeds"], t["any_usable"], strict=True) if ok]
    return (f"Token budgets ({budgets}) certify some test input at a tau with <= {usable} "
            f"validation false flags for seed(s) {seeds} (the (0, 1) and (0, 2) columns "
            f"above give the rates at the validation taus). {ceiling} {largest}")


def _sweep_section(metrics, cfg) -> list[str]:
    keys = sorted(k for k in metrics if k[1] == "anywhere")
    if len(keys) < 2:
        return []
    lines = ["## Keep-probability sweep (threat anywhere)", "",
             "Certified rate (%) [95 % interval] at selected cells; detector: unsafe recall; "
             "majority: certified accuracy on the balanced test set. `–`: beyond the "
             "sample-size ceiling.", "",
             "| setting | level | " + " | ".join(f"({e:g}, {r})" for e, r in SWEEP_CELLS)
             + " |", "|---" * (len(SWEEP_CELLS) + 2) + "|"]
    for setting in ("detector", "majority"):
        for key in keys:
            m = metrics[key]
            if setting not in m:
                continue
            blank = m["blank"].get(setting, np.zeros(25))
            cells = ["–" if blank[_cell(e, r)] else _pct(m[setting], _cell(e, r))
                     for e, r in SWEEP_CELLS]
            lines.append(f"| {setting} | {_level_name(cfg, key[0])} | " + " | ".join(cells)
                         + " |")
    lines += ["", "Token changes cost the detector exactly: one substituted token can lower "
                  "the flagged probability by a - beta (about the keep probability a), so a "
                  "flag at tau survives r >= 1 only if tau < 1 - (a - beta) (docs/THEORY.md "
                  "section 3).", ""]
    return lines


def _majority_section(metrics, cfg) -> list[str]:
    lines = ["## Majority vote: certified accuracy per class", "",
             "Mean over seeds [95 % interval]. Reference: the constant classifier is "
             "'certified' everywhere at 50 % accuracy on the balanced test set (100 % on one "
             "class, 0 % on the other).", ""]
    for key in sorted(metrics):
        m = metrics[key]
        if "majority" not in m:
            continue
        blank = np.asarray(m["blank"].get("majority", np.zeros(25))).reshape(5, 5)
        lines += [f"### {_level_name(cfg, key[0])}, threat {key[1]}, seeds "
                  f"{m['majority_seeds']}", ""]
        tables = [("all inputs = balanced (the test inputs are exactly balanced)",
                   m["majority"])] if m["safe"] == m["unsafe"] else [
            ("all inputs", m["majority"]),
            ("balanced (mean of the two classes)", m["majority_balanced"])]
        for title, table in tables + [("class safe", m["majority_safe"]),
                                      ("class unsafe", m["majority_unsafe"])]:
            mean, low, high = _grid(table)
            lines += [f"Certified accuracy, {title}:", "",
                      markdown_interval_table(mean, low, high, [f"{e:g}" for e in EPS_GRID],
                                              TOKEN_GRID, "eps \\ r", blank,
                                              per_seed=table.get("per_seed")), ""]
        lines += _against_constant(m["majority_balanced"], blank)
    return lines


def _against_constant(table: dict, blank: np.ndarray) -> list[str]:
    """Balanced certified accuracy against the constant classifier's 50 %, cell by cell:
    above (the interval lies above 50 %), below, or not distinguishable."""
    mean, low, high = _grid(table)
    verdicts = np.where(low > 0.5, "above", np.where(high < 0.5, "below", "≈ 50"))
    verdicts = np.where(blank, "–", verdicts)
    counts = {v: int((verdicts == v).sum()) for v in ("above", "below", "≈ 50")}
    head = "| eps \\ r | " + " | ".join(str(r) for r in TOKEN_GRID) + " |"
    body = [f"| {e:g} | " + " | ".join(verdicts[a]) + " |" for a, e in enumerate(EPS_GRID)]
    return [f"Balanced certified accuracy against the constant classifier's 50 % (above / "
            f"below: the 95 % interval lies entirely above / below 50 %; ≈ 50: it contains "
            f"50 %; –: beyond the sample-size ceiling): above at {counts['above']} cells, "
            f"below at {counts['below']}, not distinguishable at {counts['≈ 50']}.", "",
            head, "|---" * (len(TOKEN_GRID) + 1) + "|", *body, ""]


def _baseline_section(results, metrics, cfg) -> list[str]:
    lines = ["## Baselines on the same inputs", ""]
    lines += ["### Sequential composition and the per-modality check (same draws, every seed)",
              "",
              "Sequential composition bounds one modality's change and feeds the result into "
              "the other's bound (the better order); its thresholds are answered from the same "
              + ("count of the same draws as the joint certificate's (fixed n: where the two "
                 "thresholds are equal, so are the decisions). " if _fixed(cfg) else
                 "label streams as the joint certificate's. ")
              + "The per-modality check is UNSOUND: "
              "its claims are counted, not reported as certificates.", "",
              "| setting | level | threat | cell | joint | sequential | inputs where the "
              "per-modality check claims a cell the joint certificate did not certify (per seed) |",
              "|---" * 7 + "|"]
    for key in sorted(metrics):
        m = metrics[key]
        for setting in ("detector", "majority"):
            if f"{setting}_sequential" not in m:
                continue
            over = m[f"{setting}_overclaims"]
            gaps = []
            joint_mean = np.asarray(m[setting]["mean"]).ravel()
            seq_mean = np.asarray(m[f"{setting}_sequential"]["mean"]).ravel()
            for j in np.argsort(-(joint_mean - seq_mean), kind="stable")[:2]:
                if joint_mean[j] - seq_mean[j] <= 0:
                    continue
                e, r = EPS_GRID[j // 5], TOKEN_GRID[j % 5]
                gaps.append((f"({e:g}, {r})", _pct(m[setting], j),
                             _pct(m[f"{setting}_sequential"], j)))
            if not gaps:
                gaps = [("all", "= sequential", "= joint")]
            for k, (cell, joint, seq) in enumerate(gaps):
                claims = (", ".join(str(v) for v in over["inputs"]) + f" of {over['total']}"
                          f" ({', '.join(str(v) for v in over['cells'])} cells)") if k == 0 \
                    else ""
                lines.append(f"| {setting} | {_level_name(cfg, key[0])} | {key[1]} | {cell} | "
                             f"{joint} | {seq} | {claims} |")
    lines += ["", "Rows show the cells where the joint certificate gains most over sequential "
                  "composition (`all`: no difference at any cell).", ""]
    baselines = results.get("baselines") or {}
    if baselines:
        lines += _references_section(results, baselines, cfg)
    return lines


#: Cells of the references table.
REFERENCE_CELLS = [(0.0, 0), (0.25, 0), (0.0, 1), (0.0, 2), (0.25, 1), (0.5, 2)]


def _references_section(results, baselines, cfg) -> list[str]:
    """Every reference at the same cells on the same inputs (baseline seed, threat anywhere):
    sequential composition, image-only and text-only smoothing of the same filter, the
    factorized AND at a matched validation false-flag rate, the constant classifiers; then
    the joint and unimodal smoothings at the same validation false-flag rates."""
    labels = np.asarray(results["inputs"]["labels"])
    unsafe, safe = labels == 1, labels == 0
    with_and = any("and" in base for base in baselines.values())
    lines = [f"### Fair references at the same cells (seed {cfg.baseline_seed}, threat "
             f"anywhere, the same test inputs)", "",
             "* image-only smoothing: the same joint filter with only the image noised. The "
             "text is left clean and the filter reads it, so one changed token can change its "
             "output in any way: it certifies image changes only (r = 0; it would be robust "
             "to any number of token changes only for a filter that does not read the text, "
             "which this one does);",
             "* text-only smoothing: only the text noised; it certifies token changes only "
             "(eps = 0);"]
    if with_and:
        lines += [
            "* factorized AND: an image-only and a text-only branch, trained separately on "
            "the v2 label (each sees one modality, so each can reach at most the unimodal "
            "ceilings of docs/DATASET.md: 61.6 % and 58.6 % balanced accuracy), each smoothed "
            "over its own modality and certified against its own modality's change at alpha "
            "/ 2 (so the AND's claim holds with probability 1 - alpha like the joint "
            "certificate's); flag iff both flag, certified at (eps, r) iff the image branch "
            "is at eps and the text branch at r. Its pair of thresholds is chosen on the same "
            "validation records for a **matched** benign false-flag rate: at most the joint "
            "detector's validation rate (the most unsafe validation records flagged under "
            "that constraint). The v2 label is a relation between caption and picture, "
            "which neither branch sees;"]
    lines += ["* constant classifiers: always flag (certified 100 % recall at 100 % false "
              "flags at every cell: a constant is robust to any change) and never flag (0 % "
              "at 0 %).", "",
              "Each smoothing has its own tau for the same validation false-flag target "
              f"({100 * cfg.false_flag_rate:g} %); the table gives each one's validation and "
              "certified test false-flag rates beside its certified unsafe recall (%), [95 % "
              "bootstrap interval over the test inputs], one seed.", "",
              "| level | method | tau | validation false flags | test false flags | "
              + " | ".join(f"({e:g}, {r})" for e, r in REFERENCE_CELLS) + " |",
              "|---" * (5 + len(REFERENCE_CELLS)) + "|"]
    ceiling = lower_confidence_bound(cfg.settings.n_max, cfg.settings.n_max,
                                     cfg.settings.alpha) if _fixed(cfg) else None

    def rate(values) -> str:
        return _pct(rate_table(np.asarray(values, float)[None, :, None], cfg.bootstrap))

    for li_text, base in sorted(baselines.items()):
        li = int(li_text)
        unit = _unit_of(results, cfg.baseline_seed, li)
        if unit is None:
            continue
        det = np.asarray(unit["outcomes"]["detector"], bool)
        seq = np.asarray(unit["outcomes"]["detector_sequential"], bool)
        joint_val = unit["calibration"]["rate"]
        rows = [("joint (same seed)", f"{unit['calibration']['tau']:.4f}", joint_val,
                 det[safe, 0], [det[:, _cell(e, r)] for e, r in REFERENCE_CELLS]),
                ("sequential composition", "same", joint_val, seq[safe, 0],
                 [seq[:, _cell(e, r)] for e, r in REFERENCE_CELLS])]
        for name, modality in (("image-only smoothing", "image"),
                               ("text-only smoothing", "text")):
            b = base[f"{modality}_only"]
            flags = np.asarray(b["outcomes"]["detector"], bool)[safe, 0]
            tau = f"{b['calibration']['tau']:.4f}"
            if ceiling is not None and b["calibration"]["tau"] > ceiling:
                tau += " (above the ceiling)"
            rows.append((name, tau, b["calibration"]["rate"], flags,
                         [_single(b, e, r, modality) for e, r in REFERENCE_CELLS]))
        if "and" in base:
            grid = np.asarray(base["and"]["outcomes"], bool)
            pair = base["and"]["calibration"]
            target = pair.get("target")
            rows.append(("factorized AND" + ("" if target is None else
                                             f" (matched: <= {100 * target:.1f} %)"),
                         f"{pair['tau_image']:.3f} / {pair['tau_text']:.3f}", pair["rate"],
                         grid[safe, 0], [grid[:, _cell(e, r)] for e, r in REFERENCE_CELLS]))
        ones = np.ones(labels.size, bool)
        rows += [("always flag (constant)", "–", 1.0, ones[safe], [ones] * len(REFERENCE_CELLS)),
                 ("never flag (constant)", "–", 0.0, ~ones[safe],
                  [~ones] * len(REFERENCE_CELLS))]
        for name, tau, val_rate, flags, values in rows:
            lines.append(f"| {_level_name(cfg, li)} | {name} | {tau} | {100 * val_rate:.1f}% | "
                         f"{rate(flags)} | " + " | ".join(rate(v[unsafe]) for v in values)
                         + " |")
    lines += ["", "Image-only smoothing certifies nothing at r >= 1 and text-only smoothing "
                  "nothing at eps > 0 (the other modality is not noised, so no change of it is "
                  "covered)."
              + ("" if ceiling is None else
                 f" Ceiling at fixed n = {cfg.settings.n_max:,}: a flag at tau above "
                 f"{ceiling:.5f} (all n draws flagged) cannot be certified by any model, so a "
                 f"row marked 'above the ceiling' certifies nothing at this n."), ""]
    lines += _matched_section(results, baselines, cfg)
    return lines


#: Validation false-flag rates at which the factorized AND's pair of thresholds is chosen for
#: its operating curve (each one a calibration, as the benchmark's 5 % one).
AND_CURVE_RATES: tuple[float, ...] = tuple(float(r) for r in np.geomspace(0.002, 0.5, 40))
#: Methods of the matched comparison, in the order of the tables and figures.
MATCHED_METHODS = ("joint", "image-only smoothing", "text-only smoothing", "factorized AND")


def matched_curves(results, baselines, cfg) -> dict:
    """The joint filter, its image-only and text-only smoothings and the factorized AND, each
    at its own thresholds for a range of benign validation false-flag rates (the baseline
    seed, threat anywhere, the same test inputs; from the stored counts and validation
    estimates, no new draws: bench/curves.py).

    Returns ``{level index: {method: {"val_rate": (P,), "certified": (P, budgets, inputs),
    "points": {target: (tau text, validation rate, feasible, (budgets, inputs))}}}}``: a
    point per tau of the grid (per chosen pair for the AND), and the operating points at
    the validation rates of :data:`~hybridcert.bench.curves.VAL_RATES`.
    """
    budgets = curves.CURVE_BUDGETS
    out: dict = {}
    for li_text, base in sorted(baselines.items()):
        li = int(li_text)
        level = tuple(cfg.levels[li])
        joint = _unit_of(results, cfg.baseline_seed, li)
        if joint is None:
            continue
        methods = {}
        for name, unit, image, text in (("joint", joint, True, True),
                                        ("image-only smoothing", base["image_only"], True,
                                         False),
                                        ("text-only smoothing", base["text_only"], False,
                                         True)):
            noise = _noise(level, "anywhere", cfg.append_slots, image, text)
            bounds = curves.unit_bounds(unit, noise, cfg.settings.alpha, budgets)
            chosen = curves.validation_taus(unit["calibration"])
            if bounds is None or chosen is None:
                continue
            taus = curves.tau_grid([c["tau"] for c in chosen.values()])
            methods[name] = {
                "val_rate": np.array([curves.validation_rate(unit["calibration"], t)
                                      for t in taus]),
                "certified": curves.certified(bounds, taus),
                "points": {target: (f"{c['tau']:.4g}", c["rate"], c["feasible"],
                                    curves.certified(bounds, [c["tau"]])[0])
                           for target, c in chosen.items()}}
        entry = base.get("and")
        if entry is not None and entry.get("validation"):
            bounds = curves.and_bounds(entry, branch_noise(level, "image"),
                                       branch_noise(level, "text"), base["and_alpha"], budgets)
            if bounds is not None:
                pairs = curves.and_pairs(entry["validation"], AND_CURVE_RATES)
                chosen = curves.and_pairs(entry["validation"])
                taus = [(c["tau_image"], c["tau_text"]) for c in pairs.values()]
                methods["factorized AND"] = {
                    "val_rate": np.array([c["rate"] for c in pairs.values()]),
                    "certified": curves.and_certified(bounds, taus),
                    "points": {target: (f"{c['tau_image']:.3g} / {c['tau_text']:.3g}",
                                        c["rate"], c["feasible"],
                                        curves.and_certified(
                                            bounds, [(c["tau_image"], c["tau_text"])])[0])
                               for target, c in chosen.items()}}
        if methods:
            out[li] = methods
    return out


def _matched_section(results, baselines, cfg) -> list[str]:
    """The table of :func:`matched_curves`' operating points: each method at its own
    thresholds for 1 %, 5 % and 10 % validation false flags."""
    budgets = curves.CURVE_BUDGETS
    labels = np.asarray(results["inputs"]["labels"])
    found = matched_curves(results, baselines, cfg)
    if not found:
        return []
    with_and = any("factorized AND" in methods for methods in found.values())
    lines = ["### The same filter smoothed three ways"
             + (", and the factorized AND," if with_and else "")
             + " at matched validation false-flag rates", "",
             f"Seed {cfg.baseline_seed}, threat anywhere, the same inputs and stored counts "
             f"(no new draws): each smoothing at its own tau for 1 %, 5 % and 10 % benign "
             f"validation false flags (chosen as the calibration chooses tau, on its own "
             f"validation estimates)"
             + ("; the factorized AND at its own pair of thresholds, chosen as the benchmark "
                "chooses it for at most that rate (its branches certified at alpha / 2 each)"
                if with_and else "")
             + ". Certified test false flags at (0, 0) and certified unsafe recall (%) [95 % "
               "bootstrap interval over the test inputs]. The same comparison over the range "
               "of rates up to 30 %: `matched_curves.png`."
             + (" The validation rates are not measured alike: a smoothing's are read from its "
                "calibration's estimates (each benign record from "
                f"{cfg.val_copies} copies, the highest re-estimated from {cfg.val_copies_top}), "
                f"the AND's from {cfg.val_copies} copies per record of each branch, its pair "
                "chosen among all pairs of thresholds for the most unsafe validation records "
                "flagged: its validation rate may be the more optimistic of the two; the test "
                "false flags beside it are measured alike." if with_and else ""), "",
             "| level | validation target | method | tau | validation false flags | test false "
             "flags | " + " | ".join(f"({e:g}, {r})" for e, r in budgets) + " |",
             "|---" * (6 + len(budgets)) + "|"]
    for target in curves.VAL_RATES:
        for li, methods in found.items():
            for name in MATCHED_METHODS:
                if name not in methods or target not in methods[name]["points"]:
                    continue
                tau, rate, feasible, at = methods[name]["points"][target]
                flags = rate_table(at[0][labels == 0][None, :, None].astype(float),
                                   cfg.bootstrap)
                cells = [_pct(rate_table(at[b][labels == 1][None, :, None].astype(float),
                                         cfg.bootstrap)) for b in range(len(budgets))]
                reached = "" if feasible else " (target not reachable)"
                lines.append(f"| {_level_name(cfg, li)} | {100 * target:g} % | {name} | "
                             f"{tau} | {100 * rate:.1f}%{reached} | {_pct(flags)} | "
                             + " | ".join(cells) + " |")
    return lines + ["", "Image-only smoothing certifies nothing at r >= 1, text-only nothing "
                        "at eps > 0 (0 in those columns by construction).", ""]


def _matched_figure(results, cfg, out: Path) -> str | None:
    """``matched_curves.png``: certified unsafe recall against the benign validation
    false-flag rate, a panel per budget, a colour per method and a line style per level."""
    baselines = results.get("baselines") or {}
    found = matched_curves(results, baselines, cfg) if baselines else {}
    if not found:
        return None
    labels = np.asarray(results["inputs"]["labels"])
    unsafe = labels == 1
    styles = ["-", "--", ":", "-."]
    panels = []
    for b, (e, r) in enumerate(curves.CURVE_BUDGETS):
        lines = []
        for k, (li, methods) in enumerate(found.items()):
            for m, name in enumerate(MATCHED_METHODS):
                if name not in methods:
                    continue
                c = methods[name]
                order = np.argsort(c["val_rate"], kind="stable")
                values = c["certified"][order][:, b][:, unsafe].T[None].astype(float)
                table = rate_table(values, cfg.bootstrap)
                lines.append({"label": f"{name}, {_level_name(cfg, li)}",
                              "color": f"C{m}", "style": styles[k % len(styles)],
                              "x": c["val_rate"][order],
                              **{q: np.asarray(table[q]) for q in ("mean", "low", "high")}})
        panels.append({"title": f"budget (eps {e:g}, r {r})", "x": [0.0, 0.3],
                       "curves": lines, "marks": [(t, "grey") for t in curves.VAL_RATES]})
    path = out / "matched_curves.png"
    plots.tau_curves(
        panels, path, f"certified unsafe recall against benign validation false flags, seed "
                      f"{cfg.baseline_seed}, threat anywhere, same test inputs: each method at "
                      f"its own thresholds; fixed n {cfg.settings.n_max:,}; bands: 95 % "
                      f"bootstrap over test inputs; dotted: 1, 5, 10 %",
        ylabel="certified unsafe recall", xlabel="benign validation false-flag rate",
        logit=False)
    return path.name


def _stopping_section(metrics, cfg) -> list[str]:
    keys = [k for k in sorted(metrics) if metrics[k].get("stopping")]
    if not keys:
        return []
    s = cfg.settings
    lines = ["## The sequential rule against fixed n (same inputs, same draws)", "",
             f"The sequential decision (docs/SEQUENTIAL.md: `{s.boundary}` boundary, price "
             f"{_price(s.price_detector)} (detector) / {_price(s.price_majority)} (majority) "
             f"draws per cell, cap = n) reads the first draws of each input's stream and stops "
             f"once every cell is settled or given up; the fixed-n certificate reads all n. "
             f"Decisions: certified (input, cell) pairs over the 25 cells; lost: certified at "
             f"fixed n but not by the sequential rule (a majority decision for another class "
             f"counts as lost); gained: the reverse (its confidence sequence differs from the "
             f"fixed-n bound). Per seed.", "",
             "| level | threat | setting | n | mean draws, sequential | decisions, fixed n | "
             "decisions, sequential | lost | gained |", "|---" * 9 + "|"]
    for key in keys:
        for setting, st in metrics[key]["stopping"].items():
            def join(values, fmt="{}"):
                return ", ".join(fmt.format(v) for v in values)
            lines.append(f"| {_level_name(cfg, key[0])} | {key[1]} | {setting} | "
                         f"{join(st['n'], '{:,}')} | {join(st['queries'], '{:.0f}')} | "
                         f"{join(st['fixed'])} | {join(st['sequential'])} | {join(st['lost'])} | "
                         f"{join(st['gained'])} |")
    return lines + [""]


def _counterexample_section(results, cfg) -> list[str]:
    found = results.get("counterexample")
    if not found:
        return []
    lines = ["## A counterexample to the per-modality check", "",
             f"Search (bench/counterexample.py): {found['candidates']} candidate inputs (seed "
             f"{cfg.baseline_seed}, threat anywhere) whose per-modality check claimed a cell the "
             f"joint certificate did not certify; {len(found['attempts'])} tried in "
             f"{found['seconds']:.0f} s. For each: a Clopper–Pearson lower bound from "
             f"{found['settings']['claim_n']:,} draws, the budget corner the per-modality check "
             f"then claims, the adaptive joint attack inside it, a {found['settings']['quick_n']:,}"
             f"-draw screen and a {found['settings']['confirm_n']:,}-draw confirmation.", ""]
    f = found.get("found")
    if f:
        level = "1/2" if f["setting"] == "majority" else "tau"
        lines += [f"**Found** ({f['setting']}, {f['unit']}, input {f['id']}, true label "
                  f"{f['label']}): caption \"{f['caption']}\". With "
                  f"{found['settings']['claim_n']:,} draws the decided class {f['class']} has "
                  f"p_lower = {f['p_lower']:.4f}, so "
                  f"the per-modality check declares the input robust to every change with L2 <= "
                  f"{f['eps']:.3f} on the image and <= {f['r']} substituted tokens (each change "
                  f"alone keeps the bound above {level}); the joint bound at that budget is "
                  f"{f['joint_lower']:.4f} (not certified). The attack changed the image by L2 "
                  f"{f['image_change']:.3f} and {f['tokens_changed']} token(s) "
                  f"({' '.join(f['original_tokens'])} -> {' '.join(f['adversarial_tokens'])}); "
                  f"on {found['settings']['confirm_n']:,} fresh draws the class's frequency is "
                  f"{f['confirm_estimate']:.4f}, upper confidence bound {f['confirm_upper']:.4f} "
                  f"< {level} (each bound of the search at alpha / (2 x attempts) = "
                  f"{found.get('alpha_each', cfg.settings.alpha):.2g}, so the whole search "
                  f"errs with probability at most alpha = {cfg.settings.alpha}): the smoothed "
                  f"decision flipped inside the claimed region.", ""]
    else:
        best = [a for a in found["attempts"] if "quick_estimate" in a]
        lines += ["**Not found** within the time box."]
        if best:
            b = min(best, key=lambda a: a["quick_estimate"] - a.get(
                "level", 0.5 if a["setting"] == "majority" else 0.0))
            lines += [f" Closest: {b['id']} ({b['unit']}, {b['setting']}): p_lower "
                      f"{b['p_lower']:.4f}, claimed (eps {b['eps']:.3f}, r {b['r']}), joint "
                      f"lower bound {b['joint_lower']:.4f}; after the attack the class's "
                      f"estimated probability was {b['quick_estimate']:.3f}."]
        lines += [""]
    lines += ["| input | unit | setting | p_lower | claimed eps | claimed r | joint lower bound "
              "| estimate after attack | confirmed |", "|---" * 9 + "|"]
    for a in found["attempts"]:
        if "eps" not in a:
            continue
        lines.append(f"| {a['id']} | {a['unit']} | {a['setting']} | {a['p_lower']:.4f} | "
                     f"{a['eps']:.3f} | {a['r']} | {a['joint_lower']:.4f} | "
                     f"{a.get('quick_estimate', float('nan')):.3f} | "
                     f"{a.get('confirmed', False)} |")
    return lines + [""]


def _slices_section(metrics, cfg) -> list[str]:
    lines = ["## Held-out sprites and art style (detector, (0, 0))", "",
             "| level | threat | rate | seen sprites | held-out sprites | Noto style |",
             "|---" * 6 + "|"]
    for key in sorted(metrics):
        m = metrics[key]
        if "slices" not in m or not m["slices"]:
            continue
        for title, tables in (("certified unsafe recall", m["slices"]),
                              ("test false flags", m.get("slice_false_flags", {}))):
            cells = [_pct(tables[s]) if s in tables else "-"
                     for s in ("seen", "heldout", "noto")]
            lines.append(f"| {_level_name(cfg, key[0])} | {key[1]} | {title} | "
                         + " | ".join(cells) + " |")
    shifted = f"validation records of both art styles ({cfg.val_shifted} Noto-style records " \
        f"of seen sprites added to the validation split)" if getattr(cfg, "val_shifted", 0) \
        else "OpenMoji validation records only"
    return lines + ["", "Per test slice (%), at (0, 0): certified unsafe recall, and the "
                        "certified detector's false flags on the slice's benign inputs. tau "
                        f"is chosen on {shifted}; held-out sprites never appear in training "
                        "or validation. The validation false-flag rate per art style is in "
                        "the operating-curves tables.", ""]
