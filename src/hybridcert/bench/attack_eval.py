"""Attacks at the same budgets on the base detector and on the smoothed detector.

The unsafe test inputs are attacked to evade the detector (lower the unsafe probability) at
each budget ``(eps, r)`` under the substitution-anywhere threat, whatever their certified
region: the base model (its softmax thresholded at ``tau_base``, chosen on validation for the
same false-flag rate) with PGD + greedy substitution on its logits, the smoothed detector with
the adaptive attack on the expectation over noise (:func:`hybridcert.attacks.joint_attack`).
Both attacks take the same number of PGD steps.  The attacked input is then re-decided by
the smoothed detector with a two-sided sequential decision at the detector's ``tau`` (cap
``check_n``): *still flagged* when the flag side is certified, *evaded* when the benign side
is (upper bound < ``tau``), undecided otherwise — only an evasion of a certified input would
contradict a certificate.  Beside the certified recall at the same budget this shows the gap
between what is certified and what an attacker achieves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from hybridcert.attacks import joint_attack
from hybridcert.bench.calibrate import choose_score_threshold
from hybridcert.bench.engine import Job, run_jobs
from hybridcert.bench.models import FastFilter
from hybridcert.bench.threats import CELLS
from hybridcert.blocks import TokenBlock
from hybridcert.datasets import safety
from hybridcert.sequential.rules import ABOVE, BELOW, OPEN, DecisionTest
from hybridcert.smoothing import SmoothedClassifier
from hybridcert.smoothing.core import input_seed


@dataclass
class AttackSettings:
    """Which inputs are attacked, at which budgets, and how hard.

    Parameters
    ----------
    inputs : int
        Unsafe test inputs attacked per level (a seeded draw; 0: no attacks).
    levels : tuple of int
        Indices of the noise levels attacked (the baseline seed's filters).
    budgets : tuple of (eps, r)
        Budgets, each attacked on both the base and the smoothed detector.
    samples : int
        Noisy copies per evaluation of the adaptive attack (expectation over noise).
    steps : int
        PGD steps.
    candidates : int
        Token substitutions evaluated per round.
    check_n : int
        Cap of the sequential decision that re-decides an attacked input.
    """

    inputs: int = 6
    levels: tuple[int, ...] = (1,)
    budgets: tuple[tuple[float, int], ...] = ((0.25, 1), (0.5, 2))
    samples: int = 32
    steps: int = 10
    candidates: int = 16
    check_n: int = 2000


def run_attacks(model, noise, test, test_index, unit: dict, val, val_index, cfg, log) -> dict:
    """Attack ``settings.inputs`` unsafe inputs of ``unit`` at every budget (see module doc)."""
    settings: AttackSettings = cfg.attack
    start = time.perf_counter()
    fast = FastFilter(model)
    vocab = safety.vocabulary()
    with torch.no_grad():
        val_batch = val.batch(val_index[val.labels[val_index] == 0])
        safe_scores = torch.softmax(fast(val_batch), 1)[:, 1].numpy()
    base_cal = choose_score_threshold(safe_scores, cfg.false_flag_rate)
    tau_base = base_cal["tau"]
    tau = unit["calibration"]["tau"]
    labels = np.asarray(unit["labels"])
    unsafe = np.flatnonzero(labels == 1)
    all_cells = np.asarray(unit["outcomes"]["detector"], dtype=bool)
    with torch.no_grad():
        unsafe_index = np.array([int(unit["ids"][k].split("-")[1]) for k in unsafe])
        base_scores = torch.softmax(fast(test.batch(unsafe_index)), 1)[:, 1].numpy()
    # an attack on an input neither detector flags shows nothing: attack flagged inputs
    # first (flagged by the smoothed or the base detector, at random), then the others
    flagged = all_cells[unsafe, 0] | (base_scores >= tau_base)
    rng = np.random.default_rng(cfg.run_seed + 7)
    order = np.concatenate([rng.permutation(unsafe[flagged]), rng.permutation(unsafe[~flagged])])
    chosen = np.sort(order[: min(settings.inputs, unsafe.size)])
    ids = [unit["ids"][k] for k in chosen]
    index = [int(i.split("-")[1]) for i in ids]
    det_cells = all_cells[chosen]
    clean_flag = det_cells[:, 0]
    clean_base = base_scores[np.searchsorted(unsafe, chosen)]
    results = {"tau": tau, "tau_base": tau_base, "base_calibration": base_cal, "ids": ids,
               "clean_base_flagged": (clean_base >= tau_base).tolist(),
               "clean_smoothed_flagged": clean_flag.tolist(), "budgets": []}

    clf = SmoothedClassifier(fast, noise, 2, batch_size=cfg.batch_size)
    for eps, r in settings.budgets:
        t0 = time.perf_counter()
        base_flag, adversarial = [], []
        for k, i in enumerate(index):
            image, tokens = test.image(i), torch.from_numpy(test.tokens[i])
            attention = torch.from_numpy(test.attention[i])
            adv_image, adv_tokens = joint_attack(fast, image, tokens, 1, eps, r, vocab,
                                                 attention=attention, steps=settings.steps,
                                                 candidates=settings.candidates, seed=k)
            with torch.no_grad():
                p = float(torch.softmax(fast({"image": adv_image[None],
                                              "text": adv_tokens[None],
                                              "text_attention": attention[None]}), 1)[0, 1])
            base_flag.append(bool(clean_base[k] >= tau_base and p >= tau_base))
            adv_image, adv_tokens = joint_attack(fast, image, tokens, 1, eps, r, vocab,
                                                 attention=attention, noise=noise,
                                                 samples=settings.samples, steps=settings.steps,
                                                 candidates=settings.candidates, seed=k)
            adversarial.append({"image": adv_image,
                                "text": TokenBlock(adv_tokens, attention=attention)})
        jobs = [Job(record, input_seed(cfg.run_seed, f"{ids[k]}/attack/{eps:g},{r}"),
                    {"flag": DecisionTest([tau], cfg.settings.alpha, settings.check_n,
                                          mode="detector", target_class=1,
                                          boundary=cfg.settings.boundary)})
                for k, record in enumerate(adversarial)]
        run_jobs(clf, jobs, batch_size=cfg.batch_size)
        outcome = np.array([job.rules["flag"].outcome[0] for job in jobs])
        # still flagged: the flag side is certified again; evaded: the benign side is
        # (upper bound < tau); undecided within check_n draws: neither
        still = (outcome == ABOVE) & clean_flag
        evaded = (outcome == BELOW) & clean_flag
        estimate = np.array([job.rules["flag"].counts[1] / max(job.rules["flag"].queries, 1)
                             for job in jobs])
        cell = CELLS.index((float(eps), int(r))) if (float(eps), int(r)) in CELLS else None
        certified = det_cells[:, cell] if cell is not None else np.zeros(len(ids), bool)
        entry = {"eps": eps, "r": r,
                 "certified": certified.tolist(),
                 "base_still_flagged": base_flag,
                 "smoothed_still_flagged": still.tolist(),
                 "smoothed_estimate": estimate.tolist(),
                 "smoothed_evaded": evaded.tolist(),
                 "smoothed_undecided": ((outcome == OPEN) & clean_flag).tolist(),
                 "broken_inside_certified": int((certified & evaded).sum()),
                 "seconds": round(time.perf_counter() - t0, 1)}
        results["budgets"].append(entry)
        log(f"attack (eps {eps:g}, r {r}) on {len(ids)} unsafe inputs: base detector still "
            f"flags {sum(base_flag)}, smoothed detector {int(still.sum())} (certified "
            f"{int(certified.sum())}); {entry['seconds']:.0f} s")
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


__all__ = ["AttackSettings", "run_attacks"]
