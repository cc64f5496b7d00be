"""Base-model queries of sequential certification against fixed n, on the safety benchmark.

For the decision at (eps, r) in {(0.25, 1), (0.5, 2)}, for the decision at all 25 cells of
the benchmark's (eps, r) grid at once, and for the radius mode: mean and median queries per
input against fixed n at the same alpha, and the certified accuracy of both (points
difference).  For scale, two references: plain fixed-n certification with a tenth of the
samples, and an oracle that knows each input's pA (its fixed-n rate) and spends the fewest
samples that keep the grid's certified accuracy within 1 point — a ceiling for any stopping
rule.  Uses the demo checkpoint (run `make demo` first).

``--simulate`` replays the same stopping rules with the base model replaced by binomial draws
at each input's fixed-n rate (the fixed-n run must be cached already): seconds instead of
half an hour, for trying a rule before measuring it.

    python benchmarks/sequential_queries.py [--inputs 20] [--n-fixed 100000]
                                            [--modes decision,grid,radius,reference]
                                            [--tolerance 0.05,0.1] [--simulate]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from hybridcert.data import safety
from hybridcert.models import fusion
from hybridcert.noise import Gaussian, Substitution
from hybridcert.runs.runner import input_seed
from hybridcert.smoothing import SmoothedClassifier
from hybridcert.smoothing.core import lower_confidence_bound
from hybridcert.smoothing.sequential import certify_sequential, target_threshold

TARGETS = [(0.25, 1), (0.5, 2)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--n-fixed", type=int, default=100_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--tolerance", default="0.05",
                        help="radius mode: comma-separated L2 tolerances to try")
    parser.add_argument("--max-radius", type=float, default=1.0,
                        help="radius mode: largest L2 radius of interest (the grid's top)")
    parser.add_argument("--max-tokens", type=int, default=8,
                        help="radius mode: most substituted tokens of interest (the grid's top)")
    parser.add_argument("--checkpoint", default="artifacts/models/image+text_s0.5_a0.1_e20")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--keep-prob", type=float, default=0.1)
    parser.add_argument("--modes", default="decision,grid,radius,reference",
                        help="comma-separated: decision, grid, radius, reference")
    parser.add_argument("--simulate", action="store_true",
                        help="binomial draws at the cached fixed-n rates instead of the model")
    args = parser.parse_args()
    data = safety.splits(4000, 500, 500, 0, Path("artifacts/data"))["test"]
    model = fusion.load(args.checkpoint)
    vocab = safety.vocabulary()
    clf = SmoothedClassifier(model, {"image": Gaussian(args.sigma),
                                     "text": Substitution(args.keep_prob, vocab.size)}, 2,
                             {"text": vocab}, batch_size=1024)
    n0 = 100
    items = range(args.inputs)
    records = [data.record(i) for i in items]
    labels = data.labels[: args.inputs]
    seeds = [input_seed(0, f"test-{i}") for i in items]
    start = time.perf_counter()
    fixed = fixed_certificates(clf, records, n0, seeds, args)
    fixed_s = time.perf_counter() - start
    if args.simulate:
        clf = RateReplay(clf, {seed: c.counts for seed, c in zip(seeds, fixed, strict=True)})
        print("SIMULATED: binomial draws at the fixed-n rates replace the model")
    thresholds = [target_threshold(clf, eps, r) for eps, r in TARGETS]
    print(f"{args.inputs} test inputs, sigma {args.sigma}, keep {args.keep_prob}, "
          f"alpha {args.alpha}; fixed n = {args.n_fixed} took {fixed_s:.0f} s")

    def fixed_ok(k):
        return np.array([c.label == y and c.p_lower > thresholds[k]
                         for c, y in zip(fixed, labels, strict=True)])

    modes = args.modes.split(",")
    for k, target in enumerate(TARGETS if "decision" in modes else []):
        results = [certify_sequential(clf, records[i], n0, args.alpha, seeds[i],
                                      targets=[target], n_max=args.n_fixed) for i in items]
        queries = np.array([r.queries for r in results])
        seq_ok = np.array([r.label == y and r.certified[0]
                           for r, y in zip(results, labels, strict=True)])
        print(f"decision at (eps, r) = {target}: mean {queries.mean():,.0f}, median "
              f"{np.median(queries):,.0f} queries vs {n0 + args.n_fixed:,} "
              f"({(n0 + args.n_fixed) / queries.mean():.1f}x fewer on average); certified "
              f"accuracy {100 * seq_ok.mean():.1f}% vs {100 * fixed_ok(k).mean():.1f}% fixed")
    if "grid" in modes:
        grid_mode(clf, records, labels, seeds, fixed, n0, args)
    if "reference" in modes:
        reference(clf, records, labels, seeds, fixed, n0, args)
    for tolerance in map(float, args.tolerance.split(",")) if "radius" in modes else []:
        radius_mode(clf, records, labels, seeds, fixed, tolerance, n0, args)


GRID_EPS, GRID_R = (0.0, 0.25, 0.5, 0.75, 1.0), (0, 1, 2, 4, 8)
GRID = [(eps, r) for eps in GRID_EPS for r in GRID_R]


def grid_thresholds(clf) -> np.ndarray:
    """p* of every grid cell, shaped like the grid."""
    return np.array([target_threshold(clf, eps, r)
                     for eps, r in GRID]).reshape(len(GRID_EPS), len(GRID_R))


def grid_accuracy(results, labels, thresholds) -> np.ndarray:
    """Certified accuracy (%) per grid cell: right class and lower bound on pA above the
    cell's p* (fixed-n certificates and sequential results alike)."""
    table = sum((r.p_lower > thresholds) * (r.label == y)
                for r, y in zip(results, labels, strict=True))
    return 100 * table / len(labels)


def compare(name, queries, grid, fixed_grid, n_fixed) -> None:
    worst = np.unravel_index(np.argmax(np.abs(grid - fixed_grid)), grid.shape)
    print(f"{name}: mean {queries.mean():,.0f}, median {np.median(queries):,.0f} queries "
          f"({n_fixed / queries.mean():.1f}x fewer on average)")
    print(f"  certified accuracy over eps {GRID_EPS} x r {GRID_R}: largest difference "
          f"{np.abs(grid - fixed_grid).max():.1f} points (at eps {GRID_EPS[worst[0]]}, "
          f"r {GRID_R[worst[1]]}); mean {grid.mean():.1f}% vs {fixed_grid.mean():.1f}% fixed")


def grid_mode(clf, records, labels, seeds, fixed, n0, args) -> None:
    thresholds = grid_thresholds(clf)
    results = [certify_sequential(clf, record, n0, args.alpha, seed, targets=GRID,
                                  n_max=args.n_fixed)
               for record, seed in zip(records, seeds, strict=True)]
    compare("decision at all 25 grid cells", np.array([r.queries for r in results]),
            grid_accuracy(results, labels, thresholds),
            grid_accuracy(fixed, labels, thresholds), n0 + args.n_fixed)


def reference(clf, records, labels, seeds, fixed, n0, args) -> None:
    """Fixed n / 10 (with the model, its samples are the first tenth of the fixed-n run's)
    and the oracle."""
    thresholds = grid_thresholds(clf)
    small = fixed_certificates(clf, records, n0, seeds, args, args.n_fixed // 10)
    compare(f"reference: fixed n = {args.n_fixed // 10:,}",
            np.full(len(records), n0 + args.n_fixed // 10),
            grid_accuracy(small, labels, thresholds), grid_accuracy(fixed, labels, thresholds),
            n0 + args.n_fixed)
    mean = oracle_queries(fixed, labels, thresholds, args.alpha, args.n_fixed, budget_points=1)
    print(f"reference: an oracle that knows each pA (fixed n's rate), bounds at alpha without "
          f"a look penalty and loses at most 1 point of grid-mean accuracy: mean "
          f"{n0 + mean:,.0f} queries ({(n0 + args.n_fixed) / (n0 + mean):.1f}x fewer)")


def oracle_queries(fixed, labels, thresholds, alpha, n_max, budget_points) -> float:
    """Fewest mean samples per input with which the bound at each input's known rate keeps
    all but ``budget_points`` (of the grid mean) of the fixed-n certified cells: each input's
    cost for every number of cells it gives up, then a knapsack over inputs."""
    sizes = np.unique(np.geomspace(100, n_max, 200).astype(int))
    budget = int(budget_points / 100 * len(labels) * thresholds.size)
    best = np.zeros(budget + 1)                  # best[b]: fewest samples losing <= b cells
    for c, y in zip(fixed, labels, strict=True):
        keep = (c.p_lower > thresholds) & (c.label == y)
        if not keep.any():
            best += sizes[0]
            continue
        rate = c.counts[c.label] / sum(c.counts)
        lost = np.array([(keep & ~(lower_confidence_bound(round(rate * n), n, alpha)
                                   > thresholds)).sum() for n in sizes])
        cost = np.array([sizes[lost <= b].min() for b in range(budget + 1)])
        best = np.array([min(best[b - k] + cost[k] for k in range(b + 1))
                         for b in range(budget + 1)])
    return best[-1] / len(labels)


def radius_mode(clf, records, labels, seeds, fixed, tolerance, n0, args) -> None:
    results = [certify_sequential(clf, record, n0, args.alpha, seed, tolerance=tolerance,
                                  max_radius=args.max_radius, max_tokens=args.max_tokens,
                                  n_max=args.n_fixed)
               for record, seed in zip(records, seeds, strict=True)]
    gaps = [min(f.l2_radius[0], args.max_radius) - min(r.l2_radius[0], args.max_radius)
            for f, r in zip(fixed, results, strict=True) if f.l2_radius and r.l2_radius]
    compare(f"radius mode (tolerance {tolerance}, max radius {args.max_radius}, max tokens "
            f"{args.max_tokens})", np.array([r.queries for r in results]),
            grid_accuracy(results, labels, grid_thresholds(clf)),
            grid_accuracy(fixed, labels, grid_thresholds(clf)), n0 + args.n_fixed)
    print(f"  r = 0 radius shortfall vs fixed n (clipped at {args.max_radius}): largest "
          f"{max(gaps, default=0):.3f}, mean {np.mean(gaps) if gaps else 0:.3f}")


class RateReplay(SmoothedClassifier):
    """``clf`` with its base model replaced by binomial draws at each input's fixed-n rate
    (keyed by the input's seed), seeded by (seed, stage): the stopping rules' code runs
    unchanged on counts with the same distribution as the model's."""

    def __init__(self, clf: SmoothedClassifier, counts: dict[int, list[int]]):
        self.__dict__.update(clf.__dict__)
        self.counts = counts

    def sample_counts_many(self, records, num, seeds, stage) -> np.ndarray:
        out = np.zeros((len(records), self.num_classes), dtype=np.int64)
        for i, seed in enumerate(seeds):
            counts = np.asarray(self.counts[seed])
            top = int(np.argmax(counts))
            hits = np.random.default_rng([seed, stage]).binomial(num, counts[top] / counts.sum())
            out[i, top], out[i, 1 - top] = hits, num - hits
        return out


def fixed_certificates(clf, records, n0, seeds, args, n=None) -> list[SimpleNamespace]:
    """Fixed-n certificates, cached under artifacts/ (n = 100,000 takes about 45 s per input
    on 2 cores), so that trying other stopping settings does not redo them."""
    n = n or args.n_fixed
    key = (f"{Path(args.checkpoint).name}_in{args.inputs}_n{n}_a{args.alpha}_"
           f"s{args.sigma}_k{args.keep_prob}")
    if isinstance(clf, RateReplay):
        key = f"simulated_{key}"
    cache = Path("artifacts/sequential_fixed") / f"{key}.json"
    if args.simulate and not isinstance(clf, RateReplay) and not cache.exists():
        raise SystemExit(f"--simulate needs the fixed-n run cached ({cache}): run once "
                         f"without --simulate")
    if not cache.exists():
        results = clf.certify_many(records, n0, n, args.alpha, seeds, max_tokens=16)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps([{"label": c.label, "counts": c.counts.tolist(),
                                      "p_lower": c.p_lower, "l2_radius": c.l2_radius}
                                     for c in results]))
    return [SimpleNamespace(**row) for row in json.loads(cache.read_text())]


if __name__ == "__main__":
    main()
