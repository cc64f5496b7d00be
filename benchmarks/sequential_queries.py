"""Base-model queries of the sequential stopping rules, replayed on the same seeded paths.

Every rule reads the same label sequence per (seed, input): draw t is the input's top class
with probability pA, else the other class.  The rules (``hybridcert.sequential.rules``, and
``hybridcert.sequential.baselines`` with two peers reimplemented from their papers) decide
the two-class question "is pA above the target's p*?" at alpha, with a cap of ``--n-max``
draws:

* **new** — ``DecisionTest``: mixture confidence sequence per class (point mass at 1 + Beta
  above p*), anytime-valid at every draw, class chosen from the same draws, cap give-up;
* **new (looks)** / **new (spending)** — the same rule with Clopper–Pearson at level/K at
  geometric looks, or with exact alpha-spending boundaries at looks every 10 % (and, on the
  grid, the class choice paid only near 1/2);
* **current** — ``BonferroniLooks``: 100 selection draws, then Clopper–Pearson at alpha/11
  at doubling looks 100 .. 100,000 (what ``certify_sequential`` did);
* **betting** — Voráček, *Treatment of statistical estimation problems in randomized
  smoothing*, NeurIPS 2024: per-draw accept / reject thresholds of the Krichevsky–Trofimov
  mixture likelihood ratio against p*, each side at alpha/2 (as published), and a variant
  with alpha on each side; the class is given to it for free (its code tests the label);
* **adaptive** — Horváth et al., ICLR 2022: ns = 100, 1,000, 10,000, then to the cap,
  two-sided Clopper–Pearson at alpha/2 over 4 stages; the class given for free;
* **fixed n** — 100 selection + n_max estimation draws, Clopper–Pearson at alpha.

Per-input rates (no model run needed): ``benchmarks/data/v1_full_certify_s0.5_a0.1.tsv`` (the
previous (v1) full benchmark's per-input results, kept as this benchmark's input distribution) — the
full benchmark's 200 test inputs at sigma 0.5 / keep 0.1, certified with n = 2,000 at alpha
0.001.  Its ``p_lower`` is inverted to the exact count of the selected class (Clopper–Pearson
is monotone in the count; every row inverts exactly), and pA = max(count, 2000 - count)/2000:
the model's own rate on that input, with a standard error <= 0.011.  The top class is the
predicted one (wrong for misclassified inputs; for the 10 abstentions, whose pA <= 0.56,
counted as wrong).  Thresholds p* come from the certificate engine (``p_star``).

**The product path** (``--modes product``): the rule ``hybridcert certify --mode decision``
and ``hybridcert serve`` run — ``SequentialQuestion(noise, 2, alpha, cap,
targets=[target]).new_rule()`` on the benchmark's noise (Gaussian sigma on the image, substitution
keep on the tokens), i.e. the target together with the class at the zero budget, read with
``SequentialQuestion.result`` — against the betting sequence, on both readings of pA from the
TSV: its ``p_lower`` itself, and the point estimate max(k, n - k)/n (``--readings``).

Modes (``--modes``): ``decision`` (each target alone), ``product`` (the product path),
``synthetic`` (a grid of pA x p*),
``grid`` (all 25 cells of the report's (eps, r) grid at once, against fixed n and an oracle),
``radius`` (frontier to a tolerance), ``exact`` (worst-case error of each rule's boundary at
pA = p*, summed exactly over the stopping boundary).

    python benchmarks/sequential_queries.py [--seeds 3] [--modes decision,synthetic,...]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
from scipy.stats import beta as beta_dist

from hybridcert.noise import Gaussian, LikelihoodRatio, Substitution
from hybridcert.sequential.baselines import Adaptive, Betting, BonferroniLooks, FixedN
from hybridcert.sequential.bounds import clopper_pearson
from hybridcert.sequential.rules import DecisionTest, RadiusTest

TSV = Path(__file__).resolve().parent / "data/v1_full_certify_s0.5_a0.1.tsv"
TARGETS = [(0.25, 1), (0.5, 2)]
GRID_EPS, GRID_R = (0.0, 0.25, 0.5, 0.75, 1.0), (0, 1, 2, 4, 8)
#: The benchmark's token vocabulary (all-MiniLM-L6-v2 WordPiece words kept by the dataset).
VOCAB_SIZE = 29_523


# -- inputs and thresholds -----------------------------------------------------------------
def benchmark_rates(path: Path = TSV, n: int = 2000, alpha: float = 0.001,
                    reading: str = "point"):
    """(pA of the top class, top class == true label) per input of the fixed-n run.
    ``reading``: ``point`` (max(k, n - k)/n of the inverted count) or ``p_lower`` (the row's
    Clopper–Pearson bound itself, a pessimistic reading)."""
    ks = np.arange(1, n + 1)
    bounds = beta_dist.ppf(alpha, ks, n - ks + 1)
    rates, correct = [], []
    with open(path) as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            k = int(ks[np.argmin(np.abs(bounds - float(row["p_lower"])))])
            if abs(clopper_pearson(k, n, alpha)[0] - float(row["p_lower"])) > 1e-12:
                raise SystemExit(f"row {row['idx']}: p_lower does not invert to a count")
            rates.append(max(k, n - k) / n if reading == "point" else float(row["p_lower"]))
            correct.append(row["predict"] == row["label"] and row["predict"] != "-1")
    return np.array(rates), np.array(correct)


def p_star(eps: float, r: int, sigma: float, keep: float, vocab: int = VOCAB_SIZE) -> float:
    """p* of the region (L2 eps, r substituted tokens): the smallest pA that certifies it."""
    ratio = LikelihoodRatio.identity()
    if eps > 0:
        ratio = ratio * Gaussian(sigma).likelihood_ratio(eps)
    if r > 0:
        ratio = ratio * Substitution(keep, vocab).likelihood_ratio(r)
    try:
        from hybridcert.certificate import threshold_probability
    except ImportError:                                  # older engine
        from hybridcert.certificate.baselines import discrete_threshold as threshold_probability
    return float(threshold_probability(ratio))


def path(seed: int, item: int, p_a: float, top: int, length: int) -> np.ndarray:
    """The label sequence of one (seed, input): ``top`` with probability p_a."""
    hit = np.random.default_rng([seed, item]).random(length) < p_a
    return np.where(hit, top, 1 - top).astype(np.int64)


def drive(rule, labels: np.ndarray):
    """Hand the rule what it asks for, in order, until it is done."""
    pos = 0
    while not rule.done:
        k = rule.next_draws()
        rule.observe(labels[pos:pos + k])
        pos += k
    return rule


# -- decision mode ---------------------------------------------------------------------------
def rule_factories(threshold: float, args) -> dict:
    a, n = args.alpha, args.n_max
    return {
        "new": lambda top: DecisionTest([threshold], a, n),
        "new (looks)": lambda top: DecisionTest([threshold], a, n, boundary="looks"),
        "new (spending)": lambda top: DecisionTest([threshold], a, n, boundary="spending"),
        "current": lambda top: BonferroniLooks(a, n, [threshold]),
        "betting (a/2 per side)": lambda top: Betting(threshold, a / 2, n, top),
        "betting (a per side)": lambda top: Betting(threshold, a, n, top),
        "adaptive": lambda top: Adaptive(threshold, a, n, top),
        "fixed n": lambda top: FixedN([threshold], a, n),
    }


def run_decision(threshold, rates, correct, tops, args, names=None):
    """queries, certified, certified-and-right per rule, shape (seeds * inputs,)."""
    factories = rule_factories(threshold, args)
    out = {name: ([], [], []) for name in (names or factories)}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for i, (p_a, top) in enumerate(zip(rates, tops, strict=True)):
            labels = path(seed, i, p_a, top, args.n_max + 100)
            for name in out:
                rule = drive(factories[name](top), labels)
                cert = bool(rule.certified[0])
                out[name][0].append(rule.queries)
                out[name][1].append(cert)
                out[name][2].append(cert and rule.label == top and correct[i])
    return {k: tuple(np.array(v) for v in vals) for k, vals in out.items()}


def table(results, seeds, ref="betting (a/2 per side)", ref2="betting (a per side)"):
    lines = ["| rule | mean queries | median | mean / betting a/2 (a) | median / betting "
             "a/2 (a) | certified | certified & right |", "|---|---|---|---|---|---|---|"]
    for name, (q, cert, right) in results.items():
        r1 = (q.mean() / results[ref][0].mean(), q.mean() / results[ref2][0].mean())
        r2 = (np.median(q) / np.median(results[ref][0]),
              np.median(q) / np.median(results[ref2][0]))
        lines.append(f"| {name} | {q.mean():,.0f} | {np.median(q):,.0f} | {r1[0]:.2f} "
                     f"({r1[1]:.2f}) | {r2[0]:.2f} ({r2[1]:.2f}) | {cert.sum() / seeds:.1f} | "
                     f"{right.sum() / seeds:.1f} |")
    return "\n".join(lines)


def decision_mode(rates, correct, tops, args) -> None:
    pooled = None
    for eps, r in TARGETS:
        t = p_star(eps, r, args.sigma, args.keep)
        start = time.perf_counter()
        results = run_decision(t, rates, correct, tops, args)
        print(f"\n### decision at (eps, r) = ({eps}, {r}): p* = {t:.4f}; {len(rates)} inputs x "
              f"{args.seeds} seeds ({time.perf_counter() - start:.0f} s)\n")
        print(table(results, args.seeds))
        pooled = results if pooled is None else {
            k: tuple(np.concatenate([a, b]) for a, b in zip(pooled[k], v, strict=True))
            for k, v in results.items()}
    print("\n### both targets pooled\n")
    print(table(pooled, args.seeds))


def product_question(eps: float, r: int, args):
    """What ``certify --mode decision`` and ``serve`` ask for one target on the benchmark's
    noise: the ``SequentialQuestion`` (its ``new_rule`` holds the class at the zero budget
    too)."""
    import torch

    from hybridcert.blocks import Continuous, HybridNoise, Tokens
    from hybridcert.sequential import SequentialQuestion
    from hybridcert.smoothing import Vocabulary

    noise = HybridNoise([Continuous("image", Gaussian(args.sigma)),
                         Tokens("text", Substitution(args.keep, VOCAB_SIZE),
                                Vocabulary(torch.arange(VOCAB_SIZE)))])
    return SequentialQuestion(noise, 2, args.alpha, args.n_max, targets=[(eps, r)])


def run_product(question, threshold, rates, correct, tops, args):
    """Per seed: (queries, certified & right) of the product path, of the rule it replaced
    (one ``DecisionTest`` over the class at the zero budget and the target, done when both
    are settled) and of the betting sequence (alpha/2 per side, the class given), on the
    same paths."""
    out = {"product": ([], []), "before": ([], []), "betting": ([], [])}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        per = {k: ([], []) for k in out}
        for i, (p_a, top) in enumerate(zip(rates, tops, strict=True)):
            labels = path(seed, i, p_a, top, args.n_max + 100)
            rule = drive(question.new_rule(), labels)
            result = question.result(rule)
            per["product"][0].append(rule.queries)
            per["product"][1].append(bool(result.certified_targets[0] and result.label == top
                                          and correct[i]))
            old = drive(DecisionTest(question.thresholds, args.alpha, args.n_max), labels)
            per["before"][0].append(old.queries)
            per["before"][1].append(bool(old.certified[1] and old.label == top and correct[i]))
            bet = drive(Betting(threshold, args.alpha / 2, args.n_max, top), labels)
            per["betting"][0].append(bet.queries)
            per["betting"][1].append(bool(bet.certified[0] and correct[i]))
        for k in out:
            out[k][0].append(np.array(per[k][0]))
            out[k][1].append(np.array(per[k][1]))
    return out


def _product_line(reading, what, res, seeds) -> str:
    bq = res["betting"][0]
    cb = sum(int(c.sum()) for c in res["betting"][1])
    cells = []
    for name in ("product", "before"):
        q, c = res[name]
        means = [a.mean() / b.mean() for a, b in zip(q, bq, strict=True)]
        medians = [np.median(a) / np.median(b) for a, b in zip(q, bq, strict=True)]
        allq, allb = np.concatenate(q), np.concatenate(bq)
        got = sum(int(x.sum()) for x in c)
        cells.append(f"{allq.mean():,.0f} / {np.median(allq):,.0f} | "
                     f"{allq.mean() / allb.mean():.2f} ({min(means):.2f}..{max(means):.2f}) | "
                     f"{np.median(allq) / np.median(allb):.2f} ({min(medians):.2f}.."
                     f"{max(medians):.2f}) | {got / seeds:.1f} "
                     f"({100 * (cb - got) / max(cb, 1):+.2f}%)")
    allb = np.concatenate(bq)
    return (f"| {reading} | {what} | {allb.mean():,.0f} / {np.median(allb):,.0f} | "
            f"{cb / seeds:.1f} | " + " | ".join(cells) + " |")


def product_mode(args) -> None:
    """The product path against the betting sequence, per reading of pA and per target."""
    print(f"\n### the product path: SequentialQuestion(...).new_rule(), the rule certify "
          f"--mode decision and serve run (the target, and the class at the zero budget within "
          f"the target's draws), against betting (alpha/2 per side, the class given); "
          f"{args.seeds} seeds from {args.first_seed}, alpha {args.alpha}, cap "
          f"{args.n_max:,}\n")
    print("Ratios are to betting, pooled over seeds, with the per-seed range in brackets; "
          "'before' is the rule the product path ran until this change (one DecisionTest "
          "settling the class at the zero budget and the target).  Certified & right: per "
          "seed, with the loss against betting in % of betting's (negative: more).\n")
    print("| reading | target | betting mean / median | betting cert. & right | product mean / "
          "median | product mean ratio | product median ratio | product cert. & right "
          "(loss) | before mean / median | before mean ratio | before median ratio | before "
          "cert. & right (loss) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for reading in args.readings:
        rates, correct = benchmark_rates(reading=reading)
        tops = np.where(correct, 1, 0)
        pooled = None
        for eps, r in TARGETS:
            question = product_question(eps, r, args)
            t = float(question.thresholds[1])
            if abs(t - p_star(eps, r, args.sigma, args.keep)) > 1e-12:
                raise SystemExit(f"p* of ({eps}, {r}) differs between the question and p_star")
            res = run_product(question, t, rates, correct, tops, args)
            print(_product_line(reading, f"({eps}, {r}), p* {t:.4f}", res, args.seeds))
            pooled = res if pooled is None else {
                k: tuple([np.concatenate([a, b]) for a, b in zip(pooled[k][m], v[m],
                                                                   strict=True)]
                         for m in range(2)) for k, v in res.items()}
        print(_product_line(reading, "both targets", pooled, args.seeds))


def synthetic_mode(args) -> None:
    """Mean queries per rule on a grid of pA x p* (top class = right class)."""
    p_as = [0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]
    stars = [0.6, 0.765, 0.921, 0.99]
    names = ["new", "new (looks)", "new (spending)", "current", "betting (a/2 per side)",
             "betting (a per side)", "adaptive"]
    print(f"\n### synthetic pA x p*: mean queries (certified share), {args.synthetic_runs} "
          f"paths per cell\n")
    print("| p* | pA | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for t in stars:
        for p_a in p_as:
            rates = np.full(args.synthetic_runs, p_a)
            res = run_decision(t, rates, np.ones(len(rates), bool), np.zeros(len(rates), int),
                               argparse.Namespace(**{**vars(args), "seeds": 1}), names)
            cells = [f"{res[n][0].mean():,.0f} ({res[n][1].mean():.2f})" for n in names]
            print(f"| {t} | {p_a} | " + " | ".join(cells) + " |")


# -- the grid question -----------------------------------------------------------------------
def grid_thresholds(args) -> np.ndarray:
    return np.array([[p_star(eps, r, args.sigma, args.keep) for r in GRID_R]
                     for eps in GRID_EPS])


def grid_accuracy(p_lower, labels, tops, correct, thresholds) -> np.ndarray:
    """Certified accuracy (%) per cell: right class and bound above the cell's p*."""
    ok = (labels == tops) & correct
    cells = (p_lower[:, None, None] > thresholds[None]) & ok[:, None, None]
    return 100 * cells.mean(axis=0)


def grid_mode(rates, correct, tops, args) -> None:
    thresholds = grid_thresholds(args)
    flat = thresholds.ravel()
    print(f"\n### the grid question: all {flat.size} cells at once ({len(rates)} inputs x "
          f"{args.seeds} seeds from {args.first_seed})\n")
    print("p* per cell (rows eps " + ", ".join(map(str, GRID_EPS)) + "; columns r "
          + ", ".join(map(str, GRID_R)) + "):")
    for row in thresholds:
        print("  " + "  ".join(f"{v:.6f}" for v in row))
    configs = [("fixed n", lambda: FixedN(flat, args.alpha, args.n_max)),
               ("fixed n / 10", lambda: FixedN(flat, args.alpha, args.n_max // 10)),
               ("current", lambda: BonferroniLooks(args.alpha, args.n_max, flat))]
    for spec in args.grid_rules:
        family, _, rest = spec.partition(":")
        price, _, share = rest.partition(":")
        name = f"new ({family}" + (f", price {int(price):,}" if price else "") + (
            f", choice share {share}" if share else "") + ")"
        extra = {"choice_share": float(share)} if share else {}
        configs.append((name, lambda family=family, price=price, extra=extra: DecisionTest(
            flat, args.alpha, args.n_max, boundary=family,
            price=float(price) if price else None, **extra)))
    rows = {name: ([], []) for name, _ in configs}
    fixed_all = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        labels_all = [path(seed, i, p_a, top, args.n_max + 100)
                      for i, (p_a, top) in enumerate(zip(rates, tops, strict=True))]
        for name, make in configs:
            rules = [drive(make(), lab) for lab in labels_all]
            if name == "fixed n":
                fixed_all.append(rules)
            rows[name][0].append(np.array([r.queries for r in rules]))
            rows[name][1].append(_cell_accuracy(rules, tops, correct, thresholds))
    print("\n| rule | mean queries | median | x fewer than fixed n (seeds: min..max) | "
          "grid-mean accuracy | points vs fixed n (seeds: min..max) | largest cell difference |")
    print("|---|---|---|---|---|---|---|")
    base_q = np.concatenate(rows["fixed n"][0]).mean()
    base_acc = np.mean(rows["fixed n"][1], axis=0)
    base_seed = [a.mean() for a in rows["fixed n"][1]]
    for name, (qs, accs) in rows.items():
        q, acc = np.concatenate(qs), np.mean(accs, axis=0)
        ratio = [base_q / x.mean() for x in qs]
        points = [a.mean() - b for a, b in zip(accs, base_seed, strict=True)]
        print(f"| {name} | {q.mean():,.0f} | {np.median(q):,.0f} | {base_q / q.mean():.2f} "
              f"({min(ratio):.2f}..{max(ratio):.2f}) | {acc.mean():.2f}% | "
              f"{acc.mean() - base_acc.mean():+.2f} ({min(points):+.2f}..{max(points):+.2f}) | "
              f"{np.abs(acc - base_acc).max():.1f} |")
    name = next((n for n in rows if n == args.grid_cells_of), None)
    if name:
        diff = np.mean(rows[name][1], axis=0) - base_acc
        print(f"\n{name}: certified accuracy minus fixed n's per cell (points; rows eps, "
              f"columns r as above):")
        for row in diff:
            print("  " + "  ".join(f"{v:+5.1f}" for v in row))
    fixed = fixed_all[0]
    mean = oracle_queries(rates, tops, correct, fixed, thresholds, args.alpha, args.n_max, 1)
    print(f"\noracle (knows pA; one Clopper–Pearson bound at alpha at its chosen n; loses <= 1 "
          f"point of the grid mean, the first seed's fixed n as reference): mean "
          f"{mean:,.0f} queries ({base_q / mean:.1f}x fewer than fixed n)")
    for family in ("mixture", "looks", "spending"):
        plan = DecisionTest(flat, args.alpha, args.n_max, boundary=family)._plans[0]
        mean = sequential_oracle(rates, tops, correct, fixed, plan, 1)
        print(f"sequential oracle, {family} boundary (knows pA, crosses when pA * n reaches the "
              f"boundary, drops cells optimally; loses <= 1 point): mean {mean:,.0f} queries "
              f"({base_q / mean:.1f}x fewer than fixed n)")


def sequential_oracle(rates, tops, correct, fixed, plan, points) -> float:
    """Like ``oracle_queries``, but each cell costs the draw at which the rule's own boundary
    is reached by the expected count pA * n: the best a rule with that boundary could do if
    it knew pA (no sampling noise, no learning which cells are expensive)."""
    budget = int(points / 100 * len(rates) * plan.cert.shape[0])
    best = np.zeros(budget + 1)
    sched = plan.sched
    for p_a, f, top, right in zip(rates, fixed, tops, correct, strict=True):
        keep = np.asarray(f.certified) & (f.label == top) & right
        if not keep.any():
            best += sched[0]
            continue
        reach = p_a * sched[None, :] >= plan.cert
        when = np.where(reach.any(axis=1), sched[np.argmax(reach, axis=1)], np.inf)
        costs = np.sort(when[keep])[::-1]        # dropping b cells: the (b+1)-th dearest
        cost = np.array([costs[b] if b < len(costs) else sched[0]
                         for b in range(budget + 1)])
        cost = np.where(np.isfinite(cost), cost, 1e12)
        best = np.array([min(best[b - k] + cost[k] for k in range(b + 1))
                         for b in range(budget + 1)])
    return float(best[-1] / len(rates))


def _cell_accuracy(rules, tops, correct, thresholds) -> np.ndarray:
    """Certified accuracy (%) per cell from rules' per-threshold decisions."""
    ok = np.array([r.label == t for r, t in zip(rules, tops, strict=True)]) & correct
    cells = np.array([r.certified for r in rules]).reshape(len(rules), *thresholds.shape)
    return 100 * (cells & ok[:, None, None]).mean(axis=0)


def oracle_queries(rates, tops, correct, fixed, thresholds, alpha, n_max, points) -> float:
    """Fewest mean draws per input with which one Clopper–Pearson bound at alpha at the
    input's known rate keeps all but ``points`` (of the grid mean) of the fixed-n certified
    cells: each input's cost per number of cells it gives up, then a knapsack over inputs."""
    sizes = np.unique(np.geomspace(100, n_max, 200).astype(int))
    budget = int(points / 100 * len(rates) * thresholds.size)
    best = np.zeros(budget + 1)
    for p_a, f, top, right in zip(rates, fixed, tops, correct, strict=True):
        keep = (f.p_lower > thresholds) & (f.label == top) & right
        if not keep.any():
            best += sizes[0]
            continue
        lost = np.array([(keep & ~(clopper_pearson(round(p_a * n), n, alpha)[0]
                                   > thresholds)).sum() for n in sizes])
        cost = np.array([sizes[lost <= b].min() for b in range(budget + 1)])
        best = np.array([min(best[b - k] + cost[k] for k in range(b + 1))
                         for b in range(budget + 1)])
    return float(best[-1] / len(rates))


# -- radius mode -------------------------------------------------------------------------------
def radius_mode(rates, correct, tops, args) -> None:
    from hybridcert.certificate import certified_frontier

    noise = Substitution(args.keep, VOCAB_SIZE)

    def frontier(p):
        """eps*(r), r = 0..max_tokens, clipped at max_radius; -inf where not certified."""
        out = np.full(args.max_tokens + 1, -np.inf)
        if p > 0.5:
            radii = certified_frontier(p, sigma=args.sigma, discrete=noise,
                                       max_tokens=args.max_tokens).l2_radius[0]
            radii = np.minimum(radii[: len(out)], args.max_radius)
            out[: len(radii)] = np.where(np.isnan(radii), -np.inf, radii)
        return out

    labels_all = [path(0, i, p_a, top, args.n_max + 100)
                  for i, (p_a, top) in enumerate(zip(rates, tops, strict=True))]
    fixed = [drive(FixedN([0.5], args.alpha, args.n_max), lab) for lab in labels_all]
    ref = np.array([frontier(f.p_lower if f.label == t else 0.0)
                    for f, t in zip(fixed, tops, strict=True)])
    thresholds = grid_thresholds(args)
    fixed_acc = grid_accuracy(np.array([f.p_lower for f in fixed]),
                              np.array([f.label for f in fixed]), tops, correct, thresholds)
    print(f"\n### radius mode: frontier eps*(r), r = 0..{args.max_tokens}, clipped at "
          f"{args.max_radius} ({len(rates)} inputs, seed 0)\n")
    print("| rule | tolerance | mean queries | median | x fewer than fixed n | inputs within "
          "tolerance of fixed n at every r | largest shortfall | grid-mean accuracy vs "
          "fixed n |")
    print("|---|---|---|---|---|---|---|---|")
    for tol in args.tolerance:
        for name, make in (("new (mixture)", lambda tol=tol: RadiusTest(
                                frontier, args.alpha, args.n_max, tol)),
                           ("new (looks)", lambda tol=tol: RadiusTest(
                               frontier, args.alpha, args.n_max, tol, boundary="looks")),
                           ("current", lambda tol=tol: BonferroniLooks(
                               args.alpha, args.n_max, frontier=frontier, tolerance=tol))):
            start = time.perf_counter()
            rules = [drive(make(), lab) for lab in labels_all]
            q = np.array([r.queries for r in rules])
            got = np.array([frontier(r.p_lower if r.label == t else 0.0)
                            for r, t in zip(rules, tops, strict=True)])
            with np.errstate(invalid="ignore"):
                short = np.where(ref == got, 0.0, ref - got)
            short = np.where(np.isnan(short), np.inf, short)
            within = (short <= tol + 1e-12).all(axis=1).mean()
            acc = grid_accuracy(np.array([r.p_lower for r in rules]),
                                np.array([r.label for r in rules]), tops, correct, thresholds)
            finite = short[np.isfinite(short)]
            print(f"| {name} | {tol} | {q.mean():,.0f} | {np.median(q):,.0f} | "
                  f"{(args.n_max + 100) / q.mean():.1f} | {100 * within:.1f}% | "
                  f"{finite.max(initial=0):.3f} | {acc.mean() - fixed_acc.mean():+.2f} points "
                  f"({time.perf_counter() - start:.0f} s) |")


# -- exact worst case --------------------------------------------------------------------------
def crossing_probability(boundary: np.ndarray, p: float, band: float = 12.0) -> float:
    """P_p(count >= boundary[n] at some draw n <= n_max), summed exactly over the boundary by
    dynamic programming over (draw, count); counts more than ``band`` standard deviations
    from the mean are dropped and their mass (at most the Gaussian tail) added as if it
    crossed, so the result is an upper bound within ~1e-30 of the exact value."""
    n_max = len(boundary) - 1
    probs = np.array([1.0])                 # P(count = lo + i) among paths not yet crossed
    lo = 0
    crossed = dropped = 0.0
    for n in range(1, n_max + 1):
        nxt = np.zeros(len(probs) + 1)
        nxt[:-1] += probs * (1 - p)
        nxt[1:] += probs * p
        probs = nxt
        idx = boundary[n] - lo
        if idx < len(probs):
            crossed += probs[max(idx, 0):].sum()
            probs[max(idx, 0):] = 0.0
        sd = math.sqrt(n * p * (1 - p)) + 1
        keep_lo = max(lo, int(n * p - band * sd))
        if keep_lo > lo:
            dropped += probs[: keep_lo - lo].sum()
            probs = probs[keep_lo - lo:]
            lo = keep_lo
        keep_hi = int(n * p + band * sd) - lo
        if keep_hi + 1 < len(probs):
            dropped += probs[keep_hi + 1:].sum()
            probs = probs[: keep_hi + 1]
    return crossed + dropped


def exact_mode(args) -> None:
    print(f"\n### exact worst case at pA = p*: P(wrong certification), summed over the "
          f"stopping boundary (alpha = {args.alpha:g}, cap {args.n_max})\n")
    print("| target | p* | new: class A at p* | new: other class (1 - p*) | new: total | "
          "new (looks): total | new (spending): total | betting a/2 | betting a |")
    print("|---|---|---|---|---|---|---|---|---|")
    for eps, r in TARGETS:
        t = p_star(eps, r, args.sigma, args.keep)
        b = DecisionTest([t], args.alpha, args.n_max).per_draw_boundary(0, 0)
        own, other = crossing_probability(b, t), crossing_probability(b, 1 - t)
        looks = DecisionTest([t], args.alpha, args.n_max, boundary="looks").per_draw_boundary()
        own_l = crossing_probability(looks, t) + crossing_probability(looks, 1 - t)
        spend = DecisionTest([t], args.alpha, args.n_max,
                             boundary="spending").per_draw_boundary()
        own_s = crossing_probability(spend, t) + crossing_probability(spend, 1 - t)
        bet = [crossing_probability(Betting(t, lv, args.n_max, 0).upper, t)
               for lv in (args.alpha / 2, args.alpha)]
        print(f"| ({eps}, {r}) | {t:.4f} | {own:.3e} | {other:.3e} | {own + other:.3e} | "
              f"{own_l:.3e} | {own_s:.3e} | {bet[0]:.3e} | {bet[1]:.3e} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed + seeds - 1 (held-out paths)")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--n-max", type=int, default=100_000)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--modes", default="decision,product,synthetic,grid,radius,exact")
    parser.add_argument("--readings", default="p_lower,point",
                        help="product mode: readings of pA from the TSV (p_lower, point)")
    parser.add_argument("--synthetic-runs", type=int, default=50)
    parser.add_argument("--grid-rules",
                        default="mixture,looks,spending,mixture:10000,looks:10000,looks:14000,"
                                "spending:8000,spending:9000,spending:9500,spending:10000,"
                                "spending:12000",
                        help="new rule on the grid: family[:price[:choice_share]], comma-separated")
    parser.add_argument("--grid-cells-of", default="new (spending, price 10,000)",
                        help="grid rule whose per-cell differences are printed")
    parser.add_argument("--tolerance", default="0.05,0.1",
                        help="radius mode: comma-separated L2 tolerances")
    parser.add_argument("--max-radius", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    args.grid_rules = [c for c in args.grid_rules.split(",") if c]
    args.tolerance = [float(t) for t in args.tolerance.split(",")]
    args.readings = [r for r in args.readings.split(",") if r]
    if not set(args.readings) <= {"p_lower", "point"}:
        parser.error(f"--readings: p_lower and/or point, got {args.readings}")
    rates, correct = benchmark_rates()
    tops = np.where(correct, 1, 0)            # any fixed labelling of the top class
    print(f"{len(rates)} inputs from {TSV.relative_to(TSV.parents[3])}: pA median "
          f"{np.median(rates):.4f}, {int((rates == 1).sum())} at 1; alpha {args.alpha}, cap "
          f"{args.n_max:,}, sigma {args.sigma}, keep {args.keep}")
    modes = args.modes.split(",")
    start = time.perf_counter()
    if "decision" in modes:
        decision_mode(rates, correct, tops, args)
    if "product" in modes:
        product_mode(args)
    if "synthetic" in modes:
        synthetic_mode(args)
    if "grid" in modes:
        grid_mode(rates, correct, tops, args)
    if "radius" in modes:
        radius_mode(rates, correct, tops, args)
    if "exact" in modes:
        exact_mode(args)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
