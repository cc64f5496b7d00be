"""Threshold (flag-side) certificates: hybridcert's engine against the hybrid-smoothing
paper's solver, timed in the same run, both checked against 50-digit mpmath bounds.

A thresholded detector flags class c iff P(f = c under noise) >= tau; the flag persists at
(eps, r) iff lower(pc_lower; eps, r) >= tau.  For r = 0..32 substituted (or masked) tokens
this prints, per setting (sigma, noise, tau):

* throughput of ``certified_frontier(..., rule=Rule.flag(tau))`` on all inputs, and of a
  reimplementation of the solver of Delattre et al. (ICML 2026, repository
  tdsai-lab/hybrid-randomized-smoothing, ``certify_r_hybrid``) on a subset: region table
  (i positions differ from x, j from x') in linear float64, the normal CDF as
  0.5 (1 + erf), ``+1e-12`` guards in every log and division, an inner 80-step bisection
  for kappa on [1e-12, 1e12] (linear midpoints), an outer 60-step bisection for the L2
  radius on [0, 20], and a budget counted certified iff its radius is > 0 (budgets
  d = 0, 1, ... until the first that is not).  Written from that description for this
  comparison only;
* over-claims of each against mpmath (tests/certificate/exact.py): a budget reported
  certified whose exact bound at eps = 0 is below tau ("at eps = 0"), or a reported radius
  at which the exact bound is below tau ("radius"), on a random subset of the inputs and on
  a boundary set (pc just above and below each budget's exact threshold, and pc near 1).

    python benchmarks/threshold_certificates.py [--inputs 10000] [--paper-inputs 8]
        [--check-inputs 6] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import comb, erf

from hybridcert import Mask, Substitution, certified_frontier
from hybridcert.certificate import Rule, threshold_probability

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the tests' mpmath reference
from tests.certificate import exact as E  # noqa: E402

MAX_TOKENS = 32
VOCAB = 30522
KEEP = 0.75          # the paper's beta = 0.25 (probability that a position is changed)
R_MAX = 20.0         # the paper's outer bracket for the L2 radius
GUARD = 1e-12        # the paper's guard in logs and divisions


# -- the paper's solver, reimplemented from its description ---------------------------------

def paper_table(noise: str, d: int):
    """(mu, nu, ratio) of the paper's grouped kernels, in linear float64."""
    changed = 1.0 - KEEP
    if noise == "mask":
        v = changed ** d
        return np.array([1.0 - v, v]), np.array([0.0, v]), np.array([0.0, 1.0])
    other, keep = changed / (VOCAB - 1), KEEP
    mu, nu, ratio = [], [], []
    for i in range(d + 1):          # positions of z that differ from x
        for j in range(d + 1):      # ... from x'
            if i + j < d:
                continue
            both = i + j - d
            count = comb(d, i, exact=True) * comb(i, i - both, exact=True) * (VOCAB - 2) ** both
            px, pxa = other ** i * keep ** (d - i), other ** j * keep ** (d - j)
            mu.append(px * count)
            nu.append(pxa * count)
            ratio.append(0.0 if px == 0 else pxa / px)
    return np.array(mu), np.array(nu), np.array(ratio)


def _cdf(x):
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def _argument(t, r, sigma, log_ratio):
    return (0.5 * r * r + sigma * sigma * (math.log(t + GUARD) - log_ratio)) / (sigma * r + GUARD)


def paper_radius(p: float, tau: float, sigma: float, table) -> float:
    mu, nu, ratio = table
    log_ratio = np.log(ratio + GUARD)
    lo, hi = 0.0, R_MAX
    for _ in range(60):
        r = 0.5 * (lo + hi)
        t_lo, t_hi = 1e-12, 1e12
        for _ in range(80):
            t = 0.5 * (t_lo + t_hi)
            if float(np.sum(mu * _cdf(_argument(t, r, sigma, log_ratio)))) >= p:
                t_hi = t
            else:
                t_lo = t
        t = 0.5 * (t_lo + t_hi)
        v = float(np.sum(nu * _cdf(_argument(t, r, sigma, log_ratio) - r / (sigma + GUARD))))
        if v >= tau:
            lo = r
        else:
            hi = r
    return lo


def paper_frontier(p: float, tau: float, sigma: float, tables) -> list[float]:
    """Radii for d = 0, 1, ... while they are > 0 (the paper's stopping rule)."""
    radii = []
    for d in range(MAX_TOKENS + 1):
        r = paper_radius(p, tau, sigma, tables[d])
        if r <= 0.0:
            break
        radii.append(r)
    return radii


# -- the engine ------------------------------------------------------------------------------

def engine_noise(noise: str):
    return Mask(KEEP) if noise == "mask" else Substitution(KEEP, VOCAB)


def engine_frontier(p: np.ndarray, tau: float, sigma: float, noise: str):
    f = certified_frontier(p, sigma=sigma, discrete=engine_noise(noise), max_tokens=MAX_TOKENS,
                           rule=Rule.flag(tau))
    return [list(f.l2_radius[i, : f.max_tokens[i] + 1]) for i in range(p.size)]


# -- the 50-digit reference ------------------------------------------------------------------

class Reference:
    def __init__(self, noise: str):
        self.noise = noise
        self.regions: dict[int, E.Regions] = {}

    def _regions(self, d: int) -> E.Regions:
        if d not in self.regions:
            self.regions[d] = E.mask(KEEP, d) if self.noise == "mask" \
                else E.substitution(KEEP, VOCAB, d)
        return self.regions[d]

    def holds(self, p: float, d: int, gamma: float, tau: float) -> bool:
        return E.lower(p, self._regions(d), gamma) >= tau


def over_claims(p_list, groups, frontiers, sigma, tau, reference: Reference,
                proven=None) -> dict:
    """Certified pairs checked against mpmath, and the over-claims among them: a budget
    reported certified whose exact eps = 0 bound is below tau ("zero"), or a reported
    radius at which the exact bound is below tau ("radius"), by input group.  With
    ``proven`` (the engine's frontiers, each radius <= the exact one), "excess" is the
    largest relative excess of an over-claimed radius over the engine's."""
    out = {"pairs": 0, "zero": 0, "radius": 0, "largest": 0.0, "excess": 0.0}
    for i, (p, group, radii) in enumerate(zip(p_list, groups, frontiers, strict=True)):
        for d, eps in enumerate(radii):
            out["pairs"] += 1
            kind = None
            if not reference.holds(p, d, 0.0, tau):
                kind = "zero"
            elif eps > 0 and not reference.holds(p, d, eps / sigma, tau):
                kind = "radius"
            if kind:
                out[kind] += 1
                out[group] = out.get(group, 0) + 1
                out["largest"] = max(out["largest"], eps)
                if kind == "radius" and proven is not None and d < len(proven[i]):
                    out["excess"] = max(out["excess"], eps / proven[i][d] - 1)
    return out


def boundary_inputs(tau: float, noise: str) -> tuple[list[float], list[str]]:
    """pc a hair below and above the exact threshold of budgets 1, 2, 4, 8 (where one
    exists), and pc near 1; with their group names."""
    out, groups = [], []
    for d in (1, 2, 4, 8):
        star = threshold_probability(engine_noise(noise).likelihood_ratio(d), Rule.flag(tau))
        if np.isfinite(star) and star < 1:
            out += [star * (1 - 1e-9), star * (1 - 1e-12), min(star * (1 + 1e-9), 1 - 1e-16)]
            groups += ["threshold"] * 3
    return out + [1 - 1e-9, 1 - 1e-12, 1 - 1e-14], groups + ["near 1"] * 3


# -- the run ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--paper-inputs", type=int, default=8,
                        help="inputs the paper's solver is timed on (it is slow)")
    parser.add_argument("--check-inputs", type=int, default=6,
                        help="random inputs per setting checked against mpmath")
    parser.add_argument("--quick", action="store_true", help="one setting, for a smoke run")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    half = args.inputs // 2
    p = np.concatenate([10 ** rng.uniform(-4.5, 0, half),
                        1 - 10 ** rng.uniform(-12, -1, args.inputs - half)])
    p = rng.permutation(np.minimum(p, 1 - 1e-16))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, python "
          f"{platform.python_version()}, numpy {np.__version__}; load average at the start "
          f"{os.getloadavg()[0]:.1f} (other jobs share the cores)")
    print(f"{args.inputs} inputs: pc ~ half log-uniform on [3e-5, 1], half 1 - log-uniform on "
          f"[1e-12, 0.1]; r = 0..{MAX_TOKENS}; substitution keep {KEEP} (V = {VOCAB}) or "
          f"masking keep {KEEP}; paper solver timed on {args.paper_inputs} inputs; mpmath "
          f"check on {args.check_inputs} random inputs + the boundary set per setting\n")

    settings = [(s, n, t) for s in (0.5, 1.0) for n in ("substitution", "mask")
                for t in (4.6e-5, 1e-2)]
    if args.quick:
        settings = settings[:1]
    header = ("sigma", "noise", "tau", "engine in/s", "paper in/s", "speed-up",
              "pairs (eng/pap)", "max |rel diff|", "over-claims eng", "over-claims paper")
    rows = []
    totals: dict[str, dict] = {"engine": {}, "paper": {}}
    for sigma, noise, tau in settings:
        tables = [paper_table(noise, d) for d in range(MAX_TOKENS + 1)]
        engine_frontier(p[:50], tau, sigma, noise)           # warm-up (ratio caches)
        start = time.perf_counter()
        ours = engine_frontier(p, tau, sigma, noise)
        engine_s = time.perf_counter() - start

        subset = p[: args.paper_inputs]
        start = time.perf_counter()
        theirs = [paper_frontier(float(x), tau, sigma, tables) for x in subset]
        paper_s = time.perf_counter() - start

        diffs = [abs(a - b) / max(abs(b), 1e-300) for i in range(subset.size)
                 for a, b in zip(theirs[i], ours[i], strict=False) if b > 1e-6]
        engine_rate, paper_rate = p.size / engine_s, subset.size / paper_s

        reference = Reference(noise)
        check = [float(x) for x in p[args.paper_inputs: args.paper_inputs + args.check_inputs]]
        groups = ["random"] * len(check)
        extra, extra_groups = boundary_inputs(tau, noise)
        check, groups = check + extra, groups + extra_groups
        ours_check = engine_frontier(np.array(check), tau, sigma, noise)
        theirs_check = [paper_frontier(x, tau, sigma, tables) for x in check]
        mine = over_claims(check, groups, ours_check, sigma, tau, reference)
        paper = over_claims(check, groups, theirs_check, sigma, tau, reference, ours_check)
        for key, value in (("engine", mine), ("paper", paper)):
            for name, count in value.items():
                if name in ("largest", "excess"):
                    totals[key][name] = max(totals[key].get(name, 0.0), count)
                else:
                    totals[key][name] = totals[key].get(name, 0) + count
        pairs_subset = (sum(len(r) for r in ours[: subset.size]), sum(len(r) for r in theirs))
        rows.append((f"{sigma:g}", noise, f"{tau:g}", f"{engine_rate:,.0f}",
                     f"{paper_rate:.3f}", f"{engine_rate / paper_rate:,.0f}x",
                     f"{pairs_subset[0]}/{pairs_subset[1]}",
                     f"{max(diffs):.1e}" if diffs else "-",
                     f"{mine['zero']}+{mine['radius']} of {mine['pairs']}",
                     f"{paper['zero']}+{paper['radius']} of {paper['pairs']}"))
        print(f"sigma {sigma:g}, {noise}, tau {tau:g}: engine {p.size} inputs in "
              f"{engine_s:.2f} s ({sum(len(r) for r in ours)} certified (input, r) pairs); "
              f"paper {subset.size} inputs in {paper_s:.1f} s", flush=True)

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print("\npairs (eng/pap): certified (input, r) pairs on the paper's timing subset; max |rel "
          "diff|: largest relative radius difference there (radii > 1e-6); over-claims: "
          "'a+b of n' = a budgets certified whose exact eps = 0 bound is below tau, b radii "
          "at which the exact bound is below tau, of n certified pairs checked with mpmath "
          "(random inputs + boundary set).")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    for key in ("engine", "paper"):
        t = totals[key]
        where = ", ".join(f"{t.get(g, 0)} {g}" for g in ("random", "threshold", "near 1"))
        print(f"total over-claims, {key}: {t.get('zero', 0)} at eps = 0 + "
              f"{t.get('radius', 0)} radius, of {t.get('pairs', 0)} checked pairs (inputs: "
              f"{where}; largest over-claimed radius {t.get('largest', 0.0):.3g}"
              + (f", largest excess over the engine's radius {t['excess']:.1e} relative)"
                 if key == "paper" else ")"))


if __name__ == "__main__":
    main()
