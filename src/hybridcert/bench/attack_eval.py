"""The adaptive joint attack on the detector's certified inputs, inside and beyond each input's
own certified region: the attack ``hybridcert attack`` runs on a stored run
(:func:`hybridcert.runs.attack.attack_input`), here on the baseline seed's detector unit.

The unit's per-input rows (``unit["rows"]["detector"]``, :func:`hybridcert.bench.units.unit_rows`)
hold each input's certified region as its frontier (the largest certified L2 radius per token
budget, from the input's lower bound on the flagged class's probability).  The unit certifies
the flag side only (``Detector(tau, 1, "flag")``: no benign-side certificates exist), so the
attacked inputs are the unsafe test inputs certified flagged (at most ``inputs`` of them, a
seeded draw; all when fewer).  Each is attacked to evade the flag (lower the flagged class's
smoothed probability) by the adaptive attack (PGD on the expectation over ``samples`` noisy
copies, greedy token substitution from ``candidates`` gradient-ranked candidates per round):

* **inside**: ``r = min(tokens, largest certified r)`` changed tokens and the certified L2
  radius ``eps*(r)`` there — a budget the certificate covers, so no attack may evade;
* **beyond**: ``beyond * eps*(r)`` and ``max(ceil(beyond * r), beyond_tokens)`` tokens.

The smoothed detector is then re-estimated on the attacked input with ``n`` fresh draws (seeds
of their own) and one-sided Clopper-Pearson bounds at the unit's ``alpha``: **evaded** when
the upper bound is below ``tau``, **still flagged** when the lower bound is at least ``tau``,
**undecided** otherwise.  An evasion at a budget the region certifies ("certified and
evaded") contradicts the certificate, up to the probability ``alpha`` of each bound being
wrong: a soundness alarm, logged and reported loudly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hybridcert.bench.models import FastFilter, on_cpu_side
from hybridcert.blocks import HybridNoise, TokenBlock
from hybridcert.datasets import safety
from hybridcert.reports import plots
from hybridcert.runs.attack import (
    AttackOptions,
    AttackTarget,
    AttackView,
    attack_input,
    check_kinds,
)
from hybridcert.smoothing import (
    Detector,
    SmoothedClassifier,
    lower_confidence_bound,
    upper_confidence_bound,
)


@dataclass
class AttackSettings:
    """Which certified inputs are attacked and how hard.

    Parameters
    ----------
    inputs : int
        Unsafe test inputs certified flagged attacked per level (0: no attacks), filled
        seed by seed in the order of ``seeds``: every certified flagged input of a seed's
        unit (a seeded draw when more are available than are still wanted), then the next
        seed's, each attacked on its own seed's filter.
    levels : tuple of int
        Indices of the noise levels attacked (threat anywhere).
    seeds : tuple of int
        Training seeds whose units the attacks draw from, in order (the first: the baseline
        seed, attacked before the other seeds are certified).
    beyond : float
        Factor > 1 of the beyond attack's budget.
    tokens, beyond_tokens, samples, steps, candidates, n : int
        How hard each input is attacked and re-estimated: the fields of
        :class:`~hybridcert.runs.attack.AttackOptions` (which validates them), the options
        ``hybridcert attack`` takes.
    """

    inputs: int = 100
    levels: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    beyond: float = 2.0
    tokens: int = 1
    beyond_tokens: int = 1
    samples: int = 128
    steps: int = 100
    candidates: int = 32
    n: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.inputs, bool) or not isinstance(self.inputs, int) or self.inputs < 0:
            raise ValueError(f"inputs must be an integer >= 0, got {self.inputs!r}")
        seeds = tuple(self.seeds) if isinstance(self.seeds, (tuple, list)) else ()
        if not seeds or len(set(seeds)) != len(seeds) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in seeds):
            raise ValueError(f"seeds must be distinct integers, at least one, got {self.seeds!r}")
        check_kinds(True, self.beyond)
        self.options(0.5, 0)

    def options(self, alpha: float, seed: int) -> AttackOptions:
        """The options of :func:`~hybridcert.runs.attack.attack_input` at the unit's
        ``alpha`` and the run's ``seed``."""
        return AttackOptions(tokens=self.tokens, samples=self.samples, steps=self.steps,
                             candidates=self.candidates, n=self.n, alpha=alpha, seed=seed,
                             beyond_tokens=self.beyond_tokens)


def certified_flagged(unit: dict) -> list[dict]:
    """The detector rows of the unit's unsafe inputs certified flagged (non-empty region)."""
    return [row for row in unit["rows"]["detector"]
            if row["label"] == 1 and row.get("decision") == "flag" and row["frontier"]]


def attack_unit(model, noise: HybridNoise, data: safety.SafetyData, unit: dict,
                settings: AttackSettings, alpha: float, seed: int, batch_size: int = 128,
                log=print, device: str = "cpu") -> dict:
    """Attack the unit's unsafe inputs certified flagged inside and beyond their regions.

    Parameters
    ----------
    model : SafetyFilter
        The unit's filter.
    noise : HybridNoise
        The unit's smoothing noise (blocks ``image`` and ``text``).
    data : SafetyData
        The split the unit's ids (``test-00042``) index.
    unit : dict
        A stored unit (:mod:`hybridcert.bench.runner`'s format): ``rows``, ``calibration``,
        ``level``.
    settings : AttackSettings
    alpha : float
        Level of the re-estimates' bounds (the unit's).
    seed : int
        Seed of the input draw, the attack and the fresh draws.
    batch_size : int
        Copies per forward pass of the fresh draws.
    log : callable
    device : str
        Where the filter runs and the fresh copies are drawn (the attack's own tensors stay
        on the CPU, :func:`~hybridcert.bench.models.on_cpu_side`).

    Returns
    -------
    dict
        ``tau``, ``level``, ``available`` (certified flagged unsafe inputs), ``ids``
        (attacked), ``rows`` (one result per input and kind,
        :func:`~hybridcert.runs.attack.attack_input`), ``summary`` ({kind: counts, budgets,
        seconds}, :func:`summarize`), ``seconds``.
    """
    start = time.perf_counter()
    tau = float(unit["calibration"]["tau"])
    kinds = check_kinds(True, settings.beyond)
    fast = FastFilter(model).to(device)
    attacked = on_cpu_side(fast)
    target = AttackTarget(SmoothedClassifier(fast, noise, 2, batch_size=batch_size,
                                             device=device),
                          AttackView.of(noise), lambda record: attacked,
                          Detector(tau, 1, "flag"))
    available = certified_flagged(unit)
    chosen = available
    if len(available) > settings.inputs:
        rng = np.random.default_rng(seed + 7)
        chosen = [available[k] for k in sorted(rng.choice(len(available), settings.inputs,
                                                          replace=False))]
    options = settings.options(alpha, seed)
    rows = []
    for done, row in enumerate(chosen, start=1):
        i = int(row["id"].split("-")[1])
        record = {"image": data.image(i),
                  "text": TokenBlock(torch.from_numpy(data.tokens[i]),
                                     attention=torch.from_numpy(data.attention[i]))}
        rows += list(attack_input(target, record, row, kinds, options, alpha))
        if done % 10 == 0 and done < len(chosen):
            log(f"attack (level {unit.get('level')}): {done} of {len(chosen)} inputs, "
                f"{time.perf_counter() - start:.0f} s")
    summary = summarize(rows)
    out = {"tau": tau, "level": unit.get("level"), "alpha": alpha,
           "available": len(available), "ids": [r["id"] for r in chosen], "rows": rows,
           "summary": summary, "seconds": round(time.perf_counter() - start, 1)}
    for kind, s in summary.items():
        log(f"attack {kind} (level {out['level']}): {s['attacked']} of {len(available)} "
            f"certified flagged unsafe inputs, eps median {s['eps_median']:.3g}, r median "
            f"{s['r_median']:g}: still flagged {s['still_flagged']}, evaded {s['evaded']}, "
            f"undecided {s['undecided']}, certified and evaded {s['certified_and_evaded']}; "
            f"{s['seconds']:.0f} s")
        if s["certified_and_evaded"]:
            log(f"SOUNDNESS ALARM: the attack evaded {s['certified_and_evaded']} certified "
                f"flag(s) at a budget inside the certified region (level {out['level']}, "
                f"{kind}): " + ", ".join(r["id"] for r in rows if _alarm(r) and r["kind"] == kind))
    return out


def run_attacks(model, noise, test, test_index, unit: dict, val, val_index, cfg, log,
                inputs: int | None = None) -> dict:
    """:func:`attack_unit` with the benchmark configuration's settings (``cfg.attack``; at
    most ``inputs`` inputs when given), alpha, seed, batch size and device (the runner's call;
    ``test_index``, ``val`` and ``val_index`` are not needed: the unit's rows name its
    inputs)."""
    settings = cfg.attack if inputs is None else replace(cfg.attack, inputs=inputs)
    return attack_unit(model, noise, test, unit, settings, cfg.settings.alpha, cfg.run_seed,
                       cfg.batch_size, log, cfg.device)


def merge_parts(parts: dict) -> dict:
    """One level's attacks from its per-seed parts ({seed: :func:`attack_unit` result}, in
    the order they were filled): the rows (each with its ``seed``) and ids in that order,
    ``available`` summed, ``taus`` per seed, and the summary recomputed over every row."""
    seeds = list(parts)
    rows = [dict(row, seed=int(seed)) for seed in seeds for row in parts[seed]["rows"]]
    first = parts[seeds[0]]
    return {"tau": first["tau"], "taus": {seed: parts[seed]["tau"] for seed in seeds},
            "level": first["level"], "alpha": first["alpha"], "seeds": [int(x) for x in seeds],
            "available": sum(parts[seed]["available"] for seed in seeds),
            "ids": [i for seed in seeds for i in parts[seed]["ids"]], "rows": rows,
            "summary": summarize(rows),
            "seconds": round(sum(parts[seed]["seconds"] for seed in seeds), 1)}


def _alarm(row: dict) -> bool:
    return bool(row["certified_budget"] and row["outcome"] == "flipped")


def summarize(rows: list[dict]) -> dict:
    """Per kind (in order of appearance): ``attacked``, ``still_flagged`` (held),
    ``evaded`` (flipped), ``undecided``, ``certified_and_evaded`` (flipped at a budget the
    input's region certifies), ``clean_not_held`` (the estimate before the attack did not
    confirm the flag), the budgets (``eps_median``, ``r_median``, ``r_max``), the attack's
    ``l2_used_median`` and ``tokens_changed``, ``seconds`` (attack and re-estimate) and
    ``seconds_median`` per input."""
    out: dict = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        eps = [float(r["budget"]["image"]) for r in mine]
        tokens = [int(r["budget"].get("text", 0)) for r in mine]
        outcomes = [r["outcome"] for r in mine]
        times = [float(r["time"]) for r in mine]
        out[kind] = {
            "factor": float(mine[0]["factor"]), "attacked": len(mine),
            "still_flagged": outcomes.count("held"), "evaded": outcomes.count("flipped"),
            "undecided": outcomes.count("undecided"),
            "certified_and_evaded": sum(_alarm(r) for r in mine),
            "certified_budget": sum(bool(r["certified_budget"]) for r in mine),
            "clean_not_held": sum(r["outcome_before"] != "held" for r in mine),
            "eps_median": float(np.median(eps)), "r_median": float(np.median(tokens)),
            "r_max": max(tokens),
            "l2_used_median": float(np.median([r["l2_used"] for r in mine])),
            "tokens_changed": sum(int(r["tokens_changed"]) for r in mine),
            "seconds": round(sum(times), 1), "seconds_median": float(np.median(times))}
    return out


def report_lines(attacks: dict | None) -> list[str]:
    """The report's section on the attacks (``results["attacks"]`` of the runner: settings
    and ``levels`` {level index: :func:`attack_unit` result}); empty without attacks."""
    if not attacks or not attacks.get("levels"):
        return []
    settings = attacks.get("settings", {})
    first = next(iter(attacks["levels"].values()))
    lines = ["## Attacks inside and beyond each certified region", "",
             f"The attack `hybridcert attack` runs (`hybridcert.runs.attack.attack_input`) on "
             f"the detector, threat anywhere: up to "
             f"{settings.get('inputs', '?')} unsafe test inputs certified flagged per level, "
             f"taken from the units of seeds {attacks.get('seeds', [0])} in that order (all "
             f"of a seed's, or a seeded draw when more are available than are still wanted; "
             f"each attacked on its own seed's filter; the unit certifies the flag side "
             f"only), each attacked to evade "
             f"the flag at a budget read off its own certified region — inside: "
             f"r = min({settings.get('tokens', '?')}, largest certified r) tokens and the "
             f"certified L2 radius at r; beyond: x{settings.get('beyond', '?')} that radius "
             f"and max(ceil(x r), {settings.get('beyond_tokens', '?')}) tokens. Adaptive "
             f"attack: {settings.get('steps', '?')} PGD steps on the expectation over "
             f"{settings.get('samples', '?')} noisy copies, greedy token substitution from "
             f"{settings.get('candidates', '?')} gradient-ranked candidates per round. Each "
             f"attacked input is re-estimated with {settings.get('n', 0):,} fresh draws, "
             f"one-sided Clopper-Pearson bounds at alpha {first.get('alpha', '?')}: still "
             f"flagged (lower bound >= tau), evaded (upper bound < tau) or undecided. "
             f"'Certified and evaded' (an evasion at a budget the region certifies) must "
             f"be 0.", "",
             "| level (sigma, keep) | kind | certified flagged (available) | attacked | "
             "median eps | median r (max) | still flagged | evaded | undecided | "
             "certified and evaded | attack s (median per input) |", "|---" * 11 + "|"]
    alarms = []
    for li, res in sorted(attacks["levels"].items(), key=lambda item: int(item[0])):
        level = res.get("level")
        name = f"{li} ({level[0]:g}, {level[1]:g})" if level else str(li)
        if res.get("seeds"):
            name += ", seeds " + ", ".join(str(x) for x in res["seeds"])
        if not res["summary"]:
            lines.append(f"| {name} | none (no unsafe input certified flagged) | "
                         f"{res['available']} | 0 | | | | | | 0 | {res['seconds']:.0f} |")
        for kind, s in res["summary"].items():
            label = kind if kind == "inside" else f"beyond x{s['factor']:g}"
            broken = s["certified_and_evaded"]
            if broken:
                alarms.append(f"level {name}, {label}: {broken}")
            lines.append(f"| {name} | {label} | {res['available']} | {s['attacked']} | "
                         f"{s['eps_median']:.3g} | {s['r_median']:g} ({s['r_max']}) | "
                         f"{s['still_flagged']} | {s['evaded']} | {s['undecided']} | "
                         f"{'**' + str(broken) + ' (SOUNDNESS ALARM)**' if broken else 0} | "
                         f"{s['seconds']:.0f} ({s['seconds_median']:.1f}) |")
    lines.append("")
    if alarms:
        lines += ["**SOUNDNESS ALARM: the attack evaded certified flags inside their certified "
                  "regions (" + "; ".join(alarms) + "). A certificate over-claimed, or a bound "
                  "failed (probability alpha each).**", ""]
    else:
        lines += ["No attack evaded a flag inside its certified region. Beyond it the attack "
                  "is free to succeed; how often it does shows how strong it is.", ""]
    return lines


def figure(attacks: dict | None, out: Path) -> str | None:
    """``attacks.png`` in ``out``: per level and kind, the shares of the attacked inputs still
    flagged, evaded and undecided (95 % Clopper-Pearson whiskers); its file name, or None
    without attacks."""
    if not attacks or not attacks.get("levels"):
        return None
    groups, series = [], {"still flagged": [], "evaded": [], "undecided": []}
    for li, res in sorted(attacks["levels"].items(), key=lambda item: int(item[0])):
        level = res.get("level")
        for kind, s in res["summary"].items():
            where = "inside" if kind == "inside" else f"beyond x{s['factor']:g}"
            groups.append(f"keep {level[1]:g}\n{where}" if level else f"{li} {where}")
            for name, key in (("still flagged", "still_flagged"), ("evaded", "evaded"),
                              ("undecided", "undecided")):
                k, n = int(s[key]), int(s["attacked"])
                series[name].append((k / n, lower_confidence_bound(k, n, 0.025),
                                     upper_confidence_bound(k, n, 0.025)))
    if not groups:
        return None
    path = Path(out) / "attacks.png"
    plots.grouped_bars(groups, [{"label": name, "mean": [v[0] for v in values],
                                 "low": [v[1] for v in values],
                                 "high": [v[2] for v in values]}
                                for name, values in series.items()], path,
                       "adaptive attack on certified flagged unsafe inputs, inside and beyond "
                       "each input's certified region",
                       ylabel="share of attacked inputs",
                       note="inside: evaded must be 0 (a certified flag evaded is a soundness "
                            "alarm)")
    return path.name


__all__ = ["AttackSettings", "attack_unit", "certified_flagged", "figure", "merge_parts",
           "report_lines", "run_attacks", "summarize"]
