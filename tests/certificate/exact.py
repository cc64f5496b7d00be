"""Independent high-precision Neyman–Pearson bounds (mpmath, 50 digits).

Nothing here uses the library: the region masses come from the multinomial formula of
docs/THEORY.md section 2 (substitution) or the masking closed form, summed in mpmath;
several blocks are multiplied outcome by outcome; the Gaussian part is solved for
``log kappa`` with mpmath's normal CDF (Anderson–Björck bracketing, bisection as the
fallback).  Slow (milliseconds to a tenth of a second per bound): for tests on a handful
of cases only.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath as mp

mp.mp.dps = 50


@dataclass(frozen=True)
class Regions:
    """Discrete outcomes as (log_ratio, mu, nu) triples in mpmath; ratio 0 / infinity as
    ``-inf`` / ``+inf`` log-ratios."""

    items: tuple

    def __mul__(self, other: Regions) -> Regions:
        merged: dict = {}
        for la, ma, na in self.items:
            for lb, mb, nb in other.items:
                mu, nu = ma * mb, na * nb
                if mu == 0 and nu == 0:
                    continue
                key = mp.ninf if mu != 0 and nu == 0 else (mp.inf if mu == 0 else la + lb)
                key = mp.nstr(key, 40) if mp.isfinite(key) else str(key)
                old = merged.get(key, (la + lb if mu and nu else
                                       (mp.ninf if nu == 0 else mp.inf), 0, 0))
                merged[key] = (old[0], old[1] + mu, old[2] + nu)
        return Regions(tuple(merged.values()))


def substitution(keep: float, vocab: int, r: int) -> Regions:
    """Regions of ``r`` substituted positions under uniform substitution (exact
    multinomial sums; ``keep`` is taken as the exact binary value of the float)."""
    a = mp.mpf(keep)
    beta = (1 - a) / (vocab - 1)
    other = (vocab - 2) * beta
    items = []
    for k in range(-r, r + 1):
        mu = mp.mpf(0)
        for u in range(r + 1):
            v = u + k
            w = r - u - v
            if v < 0 or w < 0:
                continue
            mu += (mp.factorial(r) / (mp.factorial(u) * mp.factorial(v) * mp.factorial(w))
                   * a**u * beta**v * other**w)
        if mu == 0:
            continue
        log_ratio = k * (mp.log(a) - mp.log(beta))
        items.append((log_ratio, mu, mu * mp.exp(log_ratio)))
    return Regions(tuple(items))


def mask(keep: float, r: int) -> Regions:
    """Masking: ratio 1 with mass m = (1 - a)^r under both, ratio 0 / infinity 1 - m."""
    m = (1 - mp.mpf(keep)) ** r
    if r == 0:
        return Regions(((mp.mpf(0), mp.mpf(1), mp.mpf(1)),))
    return Regions(((mp.mpf(0), m, m), (mp.ninf, 1 - m, mp.mpf(0)),
                    (mp.inf, mp.mpf(0), 1 - m)))


def identity() -> Regions:
    return Regions(((mp.mpf(0), mp.mpf(1), mp.mpf(1)),))


def _root(value, target) -> mp.mpf:
    """Where the monotone increasing ``value(x)`` (a positive mass) equals ``target > 0``:
    bracketed by doubling, then the Anderson–Björck bracketing method on
    ``log(value / target)`` (scale-free: mpmath's tolerances are absolute), accepted only
    if the log-residual is below 1e-30; bisection otherwise."""

    def f(x):
        v = value(x)
        return mp.log(v / target) if v > 0 else mp.ninf

    lo, hi = mp.mpf(-1), mp.mpf(1)
    while f(lo) > 0:
        lo *= 2
    while f(hi) < 0:
        hi *= 2
    try:
        x = mp.findroot(f, (lo, hi), solver="anderson")
        if lo <= x <= hi and abs(f(x)) < mp.mpf(10) ** -30:
            return x
    except (ValueError, ZeroDivisionError, TypeError):
        pass
    for _ in range(600):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < mp.mpf(10) ** (-40) * max(1, abs(lo)):
            break
    return (lo + hi) / 2


def _sorted(regions: Regions):
    return sorted(regions.items, key=lambda t: t[0])


def lower(p, regions: Regions, gamma=0) -> mp.mpf:
    """``min nu(f)`` subject to ``mu(f) >= p`` (exact Neyman–Pearson)."""
    p, gamma = mp.mpf(p), mp.mpf(gamma)
    items = _sorted(regions)
    if gamma == 0:
        taken_mu, taken_nu = mp.mpf(0), mp.mpf(0)
        for _, mu, nu in items:
            if mu == 0:
                continue
            if taken_mu + mu >= p:
                return taken_nu + (p - taken_mu) / mu * nu
            taken_mu += mu
            taken_nu += nu
        return taken_nu
    zero_mu = sum((mu for lr, mu, _ in items if lr == mp.ninf), mp.mpf(0))
    finite = [t for t in items if mp.isfinite(t[0])]
    if p <= zero_mu:
        return mp.mpf(0)
    if p >= 1:
        return sum((nu for _, _, nu in finite), mp.mpf(0))

    def mass(log_kappa):
        return zero_mu + sum((mu * mp.ncdf((log_kappa - lr) / gamma + gamma / 2)
                              for lr, mu, _ in finite), mp.mpf(0))

    log_kappa = _root(mass, p)
    return sum((nu * mp.ncdf((log_kappa - lr) / gamma - gamma / 2) for lr, _, nu in finite),
               mp.mpf(0))


def upper(q, regions: Regions, gamma=0) -> mp.mpf:
    """``max nu(f)`` subject to ``mu(f) <= q``: regions by decreasing ratio (the ratio-
    infinity atom first), computed from the top so that tiny values keep their digits."""
    q, gamma = mp.mpf(q), mp.mpf(gamma)
    items = _sorted(regions)[::-1]
    inf_nu = sum((nu for lr, _, nu in items if lr == mp.inf), mp.mpf(0))
    finite = [t for t in items if mp.isfinite(t[0])]
    if gamma == 0:
        taken_mu, taken_nu = mp.mpf(0), inf_nu
        for _, mu, nu in finite:
            if taken_mu + mu >= q:
                return taken_nu + (q - taken_mu) / mu * nu
            taken_mu += mu
            taken_nu += nu
        return taken_nu
    if q <= 0:
        return inf_nu
    finite_mu = sum((mu for _, mu, _ in finite), mp.mpf(0))
    if q >= finite_mu:
        return inf_nu + sum((nu for _, _, nu in finite), mp.mpf(0))

    def mass(log_kappa):   # mu of {ratio >= kappa}, decreasing in log_kappa
        return sum((mu * mp.ncdf(-((log_kappa - lr) / gamma + gamma / 2))
                    for lr, mu, _ in finite), mp.mpf(0))

    log_kappa = _root(lambda x: 1 / mass(x), 1 / q)
    return inf_nu + sum((nu * mp.ncdf(-((log_kappa - lr) / gamma - gamma / 2))
                         for lr, _, nu in finite), mp.mpf(0))
