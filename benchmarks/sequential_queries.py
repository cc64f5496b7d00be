"""Base-model queries of sequential certification against fixed n, on the safety benchmark.

For the decision at (eps, r) in {(0.25, 1), (0.5, 2)} and for the radius mode: mean and
median queries per input against fixed n at the same alpha, and the certified accuracy of
both (points difference).  Uses the demo checkpoint (run `make demo` first).

    python benchmarks/sequential_queries.py [--inputs 20] [--n-fixed 100000]
                                            [--modes decision,radius] [--tolerance 0.05,0.1]
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
from hybridcert.smoothing.sequential import certify_sequential, threshold

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
    parser.add_argument("--modes", default="decision,radius",
                        help="comma-separated: decision, radius")
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
    thresholds = [threshold(clf._discrete_noise().likelihood_ratio(r)
                            * Gaussian(args.sigma).likelihood_ratio(e)) for e, r in TARGETS]
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
    if "radius" not in modes:
        return
    for tolerance in map(float, args.tolerance.split(",")):
        radius_mode(clf, records, labels, seeds, fixed, tolerance, n0, args)


def radius_mode(clf, records, labels, seeds, fixed, tolerance, n0, args) -> None:
    results = [certify_sequential(clf, record, n0, args.alpha, seed, tolerance=tolerance,
                                  max_radius=args.max_radius, max_tokens=args.max_tokens,
                                  n_max=args.n_fixed)
               for record, seed in zip(records, seeds, strict=True)]
    queries = np.array([r.queries for r in results])
    seq_grid, fixed_grid = grid_accuracy(results, labels), grid_accuracy(fixed, labels)
    worst = np.unravel_index(np.argmax(np.abs(seq_grid - fixed_grid)), seq_grid.shape)
    gaps = [min(f.l2_radius[0], args.max_radius) - min(r.l2_radius[0], args.max_radius)
            for f, r in zip(fixed, results, strict=True) if f.l2_radius and r.l2_radius]
    print(f"radius mode (tolerance {tolerance}, max radius {args.max_radius}, max tokens "
          f"{args.max_tokens}): mean {queries.mean():,.0f}, median {np.median(queries):,.0f} "
          f"queries ({(n0 + args.n_fixed) / queries.mean():.1f}x fewer on average)")
    print(f"  certified accuracy over eps {GRID_EPS} x r {GRID_R}: largest difference "
          f"{np.abs(seq_grid - fixed_grid).max():.1f} points (at eps {GRID_EPS[worst[0]]}, "
          f"r {GRID_R[worst[1]]}); mean {np.mean(seq_grid):.1f}% vs {np.mean(fixed_grid):.1f}% "
          f"fixed")
    print(f"  r = 0 radius shortfall vs fixed n (clipped at {args.max_radius}): largest "
          f"{max(gaps, default=0):.3f}, mean {np.mean(gaps) if gaps else 0:.3f}")


def fixed_certificates(clf, records, n0, seeds, args) -> list[SimpleNamespace]:
    """Fixed-n certificates, cached under artifacts/ (n = 100,000 takes about 45 s per input
    on 2 cores), so that trying other stopping settings does not redo them."""
    key = (f"{Path(args.checkpoint).name}_in{args.inputs}_n{args.n_fixed}_a{args.alpha}_"
           f"s{args.sigma}_k{args.keep_prob}")
    cache = Path("artifacts/sequential_fixed") / f"{key}.json"
    if not cache.exists():
        results = clf.certify_many(records, n0, args.n_fixed, args.alpha, seeds, max_tokens=16)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps([{"label": c.label, "counts": c.counts.tolist(),
                                      "p_lower": c.p_lower, "l2_radius": c.l2_radius}
                                     for c in results]))
    return [SimpleNamespace(**row) for row in json.loads(cache.read_text())]


GRID_EPS, GRID_R = (0.0, 0.25, 0.5, 0.75, 1.0), (0, 1, 2, 4, 8)


def grid_accuracy(results, labels) -> np.ndarray:
    """Certified accuracy (%) at each (eps, r) of the benchmark grid."""
    table = np.zeros((len(GRID_EPS), len(GRID_R)))
    for result, y in zip(results, labels, strict=True):
        if result.label != y:
            continue
        for j, r in enumerate(GRID_R):
            if r < len(result.l2_radius):
                table[:, j] += np.array(GRID_EPS) <= result.l2_radius[r]
    return 100 * table / len(labels)


if __name__ == "__main__":
    main()
