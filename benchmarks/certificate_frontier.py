"""Throughput of the certified frontier (r = 0..32) for 10,000 inputs with random pA.

Prints inputs/s of the vectorised engine, of a straightforward per-input scalar
implementation (bisection on the radius, one input at a time) on a subset, and of the
linear-program formulation on a tiny subset — all measured in this run.

    python benchmarks/certificate_frontier.py [--inputs 10000] [--keep-prob 0.05]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy.optimize import linprog
from scipy.stats import norm

from hybridcert import Substitution, certified_frontier, is_certified
from hybridcert.certificate.frontier import bisect_gamma


def scalar_frontier(p: float, sigma: float, noise: Substitution, max_tokens: int) -> list[float]:
    radii = []
    for r in range(max_tokens + 1):
        ratio = noise.likelihood_ratio(r)
        if not is_certified(np.array([p]), ratio)[0]:
            break
        radii.append(sigma * float(bisect_gamma(np.array([p]), ratio)[0]))
    return radii


def lp_lower(p: float, gamma: float, noise: Substitution, r: int, cells: int = 400) -> float:
    ratio = noise.likelihood_ratio(r)
    edges = np.concatenate([[-np.inf], np.linspace(-8, 8 + gamma, cells), [np.inf]])
    gmu, gnu = np.diff(norm.cdf(edges)), np.diff(norm.cdf(edges - gamma))
    mu = np.concatenate([np.outer(ratio.mu, gmu).ravel(), [ratio.mu_zero]])
    nu = np.concatenate([np.outer(ratio.nu, gnu).ravel(), [0.0]])
    n = mu.size
    res = linprog(nu * n, A_ub=-mu[None] * n, b_ub=[-p * n], bounds=(0, 1), method="highs-ds")
    return res.fun / n


def lp_radius(p: float, sigma: float, noise: Substitution, r: int) -> float:
    lo, hi = 0.0, norm.ppf(p)
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if lp_lower(p, mid, noise, r) > 0.5 else (lo, mid)
    return sigma * lo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--keep-prob", type=float, default=0.05)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--scalar-subset", type=int, default=100)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, args.inputs)
    noise = Substitution(args.keep_prob, args.vocab_size)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"python {platform.python_version()}")
    print(f"noise: Substitution(keep_prob={noise.keep_prob}, vocab_size={noise.vocab_size}), "
          f"sigma={args.sigma}, r = 0..{args.max_tokens}, pA ~ U(0.5, 1)")

    certified_frontier(p[:50], sigma=args.sigma, discrete=noise, max_tokens=args.max_tokens)
    start = time.perf_counter()
    frontier = certified_frontier(p, sigma=args.sigma, discrete=noise,
                                  max_tokens=args.max_tokens)
    vector_s = time.perf_counter() - start
    certified_pairs = int((frontier.max_tokens + 1).sum())
    print(f"vectorised engine: {args.inputs} inputs in {vector_s:.2f} s "
          f"= {args.inputs / vector_s:,.0f} inputs/s ({certified_pairs} certified (input, r) "
          f"pairs, mean r_max {frontier.max_tokens.mean():.1f})")

    subset = p[: args.scalar_subset]
    start = time.perf_counter()
    scalar = [scalar_frontier(x, args.sigma, noise, args.max_tokens) for x in subset]
    scalar_s = time.perf_counter() - start
    worst = max(abs(a - b) / max(b, 1e-12) for i, radii in enumerate(scalar)
                for a, b in zip(frontier.l2_radius[i, : len(radii)], radii, strict=True))
    print(f"scalar per-input bisection: {subset.size} inputs in {scalar_s:.2f} s = "
          f"{subset.size / scalar_s:,.1f} inputs/s; speed-up of the engine "
          f"{(args.inputs / vector_s) / (subset.size / scalar_s):,.0f}x; "
          f"largest relative difference {worst:.1e}")

    tiny = [(float(x), r) for x in p[:3] for r in (0, 1) if frontier.max_tokens[0] >= 0]
    start = time.perf_counter()
    lp = [(x, r, lp_radius(x, args.sigma, noise, r)) for x, r in tiny
          if is_certified(np.array([x]), noise.likelihood_ratio(r))[0]]
    lp_s = time.perf_counter() - start
    if lp:
        engine = {(x, r): frontier.l2_radius[list(p).index(x), r] for x, r, _ in lp}
        diff = max(abs(engine[(x, r)] - v) for x, r, v in lp)
        print(f"linear program (400-cell grid, 30 bisection steps): {len(lp)} (input, r) "
              f"radii in {lp_s:.1f} s = {len(lp) / lp_s:.2f} radii/s; largest difference to "
              f"the engine {diff:.1e} (grid error)")


if __name__ == "__main__":
    main()
