"""A concrete counterexample to the per-modality check, found by search.

The per-modality check (UNSOUND) declares an input robust at ``(eps, r)`` when the image
change alone and the token change alone each keep the decision (docs/THEORY.md section 3).
For a confidence bound ``p_lower`` on the decided class it claims every budget up to the
corner ``(eps_c, r_c)``: ``eps_c`` the image-only certified radius and ``r_c`` the text-only
certified token count — both read off the joint region of ``p_lower`` at ``r = 0`` and at
``eps = 0``, where the joint certificate *is* the single-modality one.  The joint certificate
does not cover the corner.

The search, for candidate inputs of the baseline seed's filters (those whose sequential run
showed a per-modality claim that the joint certificate did not certify, smallest claims
first: they
sit closest to the decision level):

1. **claim**: ``claim_n`` fresh draws give a Clopper–Pearson lower bound ``p_lower`` at
   ``alpha / (2 max_attempts)`` on the decided class; the per-modality check then claims the corner;
2. **search**: the adaptive joint attack (:func:`hybridcert.attacks.joint_attack`: PGD on
   the expectation over noise, greedy token substitution scored under noise at the attacked
   image, PGD again) inside the corner's budget;
3. **confirm**: a quick estimate from ``quick_n`` draws screens the result; a candidate whose
   estimate falls below the decision level is re-drawn ``confirm_n`` times from a fresh
   stream, and it is a counterexample when the Clopper–Pearson *upper* bound at
   ``alpha / (2 max_attempts)`` on the decided class stays below the level (1/2 for the
   majority vote, ``tau`` for the detector) and the perturbation lies inside the claimed
   corner: by the union bound over every attempt's two bounds, with probability at least
   ``1 - alpha`` a reported counterexample is real — the smoothed decision flipped inside a
   budget the per-modality check declared safe.

The search is time-boxed (``seconds``); every attempt is reported, found or not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from hybridcert.attacks import joint_attack, pgd
from hybridcert.bench.models import FastFilter, on_cpu_side
from hybridcert.bench.store import load_unit
from hybridcert.bench.threats import CELLS, noise_for
from hybridcert.blocks import TokenBlock
from hybridcert.certificate import MAJORITY, Rule, lower_bound
from hybridcert.datasets import safety
from hybridcert.smoothing import SmoothedClassifier, Stage
from hybridcert.smoothing.core import input_seed, lower_confidence_bound, upper_confidence_bound


@dataclass
class CounterexampleSettings:
    """Effort of the search.

    Parameters
    ----------
    seconds : float
        Time box (0: no search).
    claim_n, quick_n, confirm_n : int
        Draws behind the claimed bound, the screening estimate and the confirmation.
    samples, steps, candidates : int
        Effort of the adaptive attack (noisy copies per evaluation, PGD steps, token
        candidates per round).
    max_attempts : int
        Largest number of candidates tried.
    rounds, common_noise : int, bool
        The attack's rounds of (token choice, PGD) and its common-random-number scoring of
        token candidates (:func:`hybridcert.attacks.joint_attack`).
    screen_share : float
        Share of the time box spent screening candidates before any attempt (0: none): each
        screened input gets an image-only PGD (``screen_steps`` steps, ``screen_samples``
        copies) at the image radius its ``screen_n``-draw estimate would give, and the
        attempts then take the inputs whose image alone removed the largest share of their
        margin above the decision level first.  The screen makes no claim (its draws are
        separate from the claim's and the confirmation's), so the search's error budget is
        unchanged.
    """

    seconds: float = 60.0
    claim_n: int = 20_000
    quick_n: int = 1_000
    confirm_n: int = 20_000
    samples: int = 48
    steps: int = 30
    candidates: int = 32
    max_attempts: int = 40
    rounds: int = 1
    common_noise: bool = False
    screen_share: float = 0.0
    screen_n: int = 500
    screen_steps: int = 20
    screen_samples: int = 32


def _candidates(results: dict, units: dict, seed: int) -> list[tuple]:
    """(priority, unit name, input position, setting) for inputs whose per-modality rule
    claimed a cell (eps > 0, r > 0) that the joint rule did not certify."""

    out = []
    for name, info in results["units"].items():
        if info["seed"] != seed or info["threat"] != "anywhere":
            continue
        unit = units.get(name)
        if unit is None:
            continue
        for setting in ("majority", "detector"):
            pm = unit["outcomes"].get(f"{setting}_per_modality")
            if pm is None:
                continue
            joint = np.asarray(unit["outcomes"][setting], dtype=bool)
            over = np.asarray(pm, dtype=bool) & ~joint
            mixed = np.array([e > 0 and r > 0 for e, r in CELLS])
            for i in np.flatnonzero((over & mixed).any(1)):
                cells = [CELLS[j] for j in np.flatnonzero(over[i] & mixed)]
                size = max(r + 4 * e for e, r in cells)
                out.append((size, name, int(i), setting))
    # the smallest claims first: their inputs sit closest to the decision level, so the
    # attack has the least probability to remove
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    return out


def search_counterexample(cfg, models: dict, results: dict, test, test_index, log) -> dict:
    """Run the search (see module doc) and return every attempt and the counterexample."""

    settings: CounterexampleSettings = cfg.counterexample
    start = time.perf_counter()
    units_dir = cfg.cache / "bench" / cfg.out.name / cfg.signature()
    units = {name: load_unit(units_dir / f"{name}.json") for name in results["units"]}
    candidates = _candidates(results, units, cfg.baseline_seed)
    vocab = safety.vocabulary()
    attempts, found = [], None
    # every attempt spends two bounds (the claim's lower, the confirmation's upper): at
    # alpha / (2 max_attempts) each, a reported counterexample is wrong with probability at
    # most alpha over the whole search
    each = cfg.settings.alpha / (2 * settings.max_attempts)
    out = {"settings": vars(settings).copy(), "candidates": len(candidates),
           "alpha_each": each}
    log(f"counterexample search: {len(candidates)} candidate inputs with a per-modality claim "
        f"the joint certificate did not certify")
    if settings.screen_share > 0:
        candidates, screened = _screen(cfg, models, results, units, candidates, test,
                                       start + settings.screen_share * settings.seconds)
        out["screened"] = screened
        log(f"counterexample screen: {len(screened)} inputs in "
            f"{time.perf_counter() - start:.0f} s")
    for _, name, k, setting in candidates[: settings.max_attempts]:
        if time.perf_counter() - start > settings.seconds:
            break
        unit = units[name]
        model, noise, clf, input_id, i = candidate_setup(cfg, models, results, unit, name, k)
        tau = unit["calibration"]["tau"] if setting == "detector" else None
        rule = Rule.flag(tau) if setting == "detector" else MAJORITY
        level_p = tau if setting == "detector" else 0.5
        # the decided class: the flagged class, or the class the per-modality rule claimed
        # (the joint rule may have abstained on this input)
        decided = 1 if setting == "detector" else \
            int(unit["baseline_labels"]["majority_per_modality"][k])
        if decided < 0:
            attempts.append({"unit": name, "id": input_id, "setting": setting,
                             "skipped": "the per-modality rule abstained"})
            continue
        record = {"image": test.image(i),
                  "text": TokenBlock(torch.from_numpy(test.tokens[i]),
                                     attention=torch.from_numpy(test.attention[i]))}
        prepared = clf.validate(record)
        seed = input_seed(cfg.run_seed, f"{input_id}/claim")
        counts = clf.sample_counts(prepared, settings.claim_n, seed, Stage.ESTIMATION)
        p_low = lower_confidence_bound(int(counts[decided]), settings.claim_n, each)
        region = noise.frontier([p_low], rule=rule, max_tokens=8,
                                noised_positions=[noise.noised_positions(prepared)])[0]
        attempt = {"unit": name, "id": input_id, "setting": setting, "class": decided,
                   "label": int(test.labels[i]), "p_lower": p_low, "level": level_p}
        if not region.certified or region.max_tokens < 1 or region.l2_radius(0) <= 0:
            attempt["skipped"] = "no claim with both modalities at this bound"
            attempts.append(attempt)
            continue
        eps_c = float(region.l2_radius(0)) * (1 - 1e-6)
        r_c = int(region.max_tokens)
        budget = noise.pair_budget(eps_c, r_c)
        joint_low = float(lower_bound(p_low, noise.ratio(budget)))
        attempt.update(eps=eps_c, r=r_c, joint_lower=joint_low,
                       joint_certified=bool(region.certifies(budget)))
        adv_image, adv_tokens = joint_attack(
            model, record["image"], record["text"].ids, decided, eps_c, r_c, vocab,
            attention=record["text"].attention, noise=noise, samples=settings.samples,
            steps=settings.steps, candidates=settings.candidates, seed=k, image_first=True,
            rounds=settings.rounds, common_noise=settings.common_noise)
        adversarial = clf.validate({"image": adv_image,
                                    "text": TokenBlock(adv_tokens,
                                                       attention=record["text"].attention)})
        quick = clf.sample_counts(adversarial, settings.quick_n,
                                  input_seed(cfg.run_seed, f"{input_id}/quick"),
                                  Stage.ESTIMATION)
        estimate = float(quick[decided] / settings.quick_n)
        attempt.update(quick_estimate=estimate,
                       image_change=float((adv_image - record["image"]).norm()),
                       tokens_changed=int((adv_tokens != record["text"].ids).sum()))
        if estimate < level_p:
            confirm = clf.sample_counts(adversarial, settings.confirm_n,
                                        input_seed(cfg.run_seed, f"{input_id}/confirm"),
                                        Stage.ESTIMATION)
            upper = upper_confidence_bound(int(confirm[decided]), settings.confirm_n, each)
            inside = attempt["image_change"] <= eps_c + 1e-6 and \
                attempt["tokens_changed"] <= r_c and not attempt["joint_certified"]
            attempt.update(confirm_estimate=float(confirm[decided] / settings.confirm_n),
                           confirm_upper=upper, confirmed=bool(upper < level_p and inside))
            if attempt["confirmed"] and found is None:
                found = dict(attempt)
                found.update(
                    caption=str(test.texts[i]),
                    adversarial_tokens=[safety.tokenizer().id_to_token(int(t))
                                        for t in adv_tokens[record["text"].attention.bool()]],
                    original_tokens=[safety.tokenizer().id_to_token(int(t)) for t in
                                     record["text"].ids[record["text"].attention.bool()]])
        attempts.append(attempt)
        log(f"counterexample attempt {input_id} ({name}, {setting}): p_lower {p_low:.4f}, "
            f"per-modality claims (eps {eps_c:.3f}, r {r_c}), joint lower bound there "
            f"{joint_low:.4f}; after the attack {estimate:.3f}"
            + (f", confirmed upper bound {attempt.get('confirm_upper', 1):.4f}"
               if "confirm_upper" in attempt else ""))
        if found is not None:
            break
    out.update(attempts=attempts, found=found, seconds=round(time.perf_counter() - start, 1))
    return out


def candidate_setup(cfg, models, results, unit, name, k):
    """(model, noise, smoothed classifier, input id, test row) of candidate ``k`` of a unit;
    the model takes and returns CPU tensors (the attacks'), the classifier runs on
    ``cfg.device``."""
    info = results["units"][name]
    fast = FastFilter(models[(info["seed"], info["level"])]).to(cfg.device)
    noise = noise_for(cfg.levels[info["level"]], "anywhere")
    clf = SmoothedClassifier(fast, noise, 2, batch_size=cfg.batch_size, device=cfg.device)
    input_id = unit["ids"][k]
    return on_cpu_side(fast), noise, clf, input_id, int(input_id.split("-")[1])


def _screen(cfg, models, results, units, candidates, test, until: float):
    """(candidates reordered, screen rows): the screened inputs by the share of their margin
    an image-only attack removed (largest first), then the rest in their order."""

    settings: CounterexampleSettings = cfg.counterexample
    rows, ranked = [], []
    for position, (_, name, k, setting) in enumerate(candidates):
        if time.perf_counter() > until:
            break
        unit = units[name]
        if setting != "majority":
            continue            # the detector's claims are screened by the attempts alone
        decided = int(unit["baseline_labels"]["majority_per_modality"][k])
        if decided < 0:
            continue
        model, noise, clf, input_id, i = candidate_setup(cfg, models, results, unit, name, k)
        text = TokenBlock(torch.from_numpy(test.tokens[i]),
                          attention=torch.from_numpy(test.attention[i]))
        prepared = clf.validate({"image": test.image(i), "text": text})
        n = settings.screen_n
        hits = int(clf.sample_counts(prepared, n, input_seed(cfg.run_seed, f"{input_id}/screen"),
                                     Stage.ESTIMATION)[decided])
        before = hits / n
        # a budget for the screen only: the radius a 95 % bound on this estimate would give
        region = noise.frontier([lower_confidence_bound(hits, n, 0.05)],
                                rule=MAJORITY, max_tokens=8,
                                noised_positions=[noise.noised_positions(prepared)])[0]
        if not region.certified or region.l2_radius(0) <= 0:
            continue
        eps = float(region.l2_radius(0))
        attacked = pgd(model, test.image(i)[None], text.ids, text.attention.long(), decided,
                        eps, settings.screen_steps, noise, settings.screen_samples,
                        torch.Generator().manual_seed(k))
        after = clf.sample_counts(clf.validate({"image": attacked[0], "text": text}), n,
                                  input_seed(cfg.run_seed, f"{input_id}/screen-after"),
                                  Stage.ESTIMATION)[decided] / n
        share = float((before - after) / max(before - 0.5, 1e-9))
        rows.append({"unit": name, "id": input_id, "estimate": float(before), "eps": eps,
                     "after_image_attack": float(after), "margin_removed": share})
        ranked.append((-share, position))
    order = [candidates[j] for _, j in sorted(ranked)]
    chosen = {j for _, j in ranked}
    return order + [c for j, c in enumerate(candidates) if j not in chosen], rows


__all__ = ["CounterexampleSettings", "search_counterexample"]
