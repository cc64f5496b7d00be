"""Fast two-class radius: Newton on the joint system, then a proof of certification.

The two-class radius at ``r`` tokens is the shift ``gamma*`` where the Neyman–Pearson set
of mu-mass ``p`` has nu-mass exactly 1/2.  In the unknowns ``(s, gamma)`` (``log kappa =
log_ratio[pivot] + gamma s``) this is the 2x2 system ``F(s, gamma) = p``,
``G(s, gamma) = 1/2``, solved by Newton's method from the sequential-composition radius.

Newton gives an estimate, not a guarantee, so the reported shift ``gamma_c`` slightly below
it is *proved* certified by a witness: a point ``s_w`` with ``F(s_w, gamma_c) <= p`` and
``G(s_w, gamma_c) > 1/2`` (both with floating-point margins).  Then ``s_w`` lies left of the
exact threshold, and since ``G`` increases in ``s``, ``lower(p, gamma_c) >= G(s_w) > 1/2``.
Inputs whose proof fails are handed back to the bisection.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from hybridcert.certificate.bounds import (
    _SQRT_2PI,
    _Curve,
    _discrete,
    _lower_bound,
    _mass_residual,
    _safety_margin,
    normal_terms,
)
from hybridcert.noise.ratio import LikelihoodRatio

_NEWTON_STEPS = 80
_MASS_STEPS = 6
# Relative distances below the Newton estimate at which a witness is tried, in order.
_BACKOFFS = (1e-11, 1e-9, 1e-7, 1e-5)


def newton_gamma(p: np.ndarray, ratio: LikelihoodRatio) -> tuple[np.ndarray, np.ndarray]:
    """Certified two-class shifts and a mask of the inputs for which they are proven."""
    n = p.size
    gamma_out = np.zeros(n)
    proven = np.zeros(n, dtype=bool)
    if ratio.n_regions == 0 or n == 0:
        return gamma_out, proven
    exact = _discrete(p, ratio)
    # Start from the sequential radius, the better of both orders: a lower bound on gamma*.
    discrete_first = ndtri(np.clip(_lower_bound(p, ratio), 0.5, 1 - 1e-16))
    gaussian_first = ndtri(p) - ndtri(_discrete_threshold(ratio))
    gamma = np.maximum.reduce([discrete_first, gaussian_first, 1e-3 * ndtri(p)])
    pivot = ratio.log_ratio[exact.pivot]
    s0 = np.clip(ndtri(np.clip(exact.fraction, 1e-300, 1 - 1e-16)), -38, 38) - gamma / 2
    # A few damped Newton steps on the mass equation at the starting shift, so the joint
    # Newton starts near its curve (unconverged inputs are caught below and bisected).
    s = s0
    curve = _Curve(ratio, gamma, pivot)
    residual = _mass_residual(p)
    for _ in range(_MASS_STEPS):
        f, f_tail, slope, g = curve.evaluate(s)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = -residual(f, f_tail, g, slice(None)) / slope
        s = s + np.clip(np.where(np.isfinite(step), step, 0.0), -4.0, 4.0)

    distance = ratio.log_ratio[None, :]
    ok = np.ones(n, dtype=bool)
    active = np.arange(n)
    for _ in range(_NEWTON_STEPS):
        if active.size == 0:
            break
        a = active
        r1, r2, j = _system(p[a], s[a], gamma[a], pivot[a], distance, ratio,
                            _mass_residual(p[a]))
        det = j[0] * j[3] - j[1] * j[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            ds = (-r1 * j[3] + r2 * j[1]) / det
            dg = (-r2 * j[0] + r1 * j[2]) / det
        bad = ~np.isfinite(ds) | ~np.isfinite(dg)
        ok[a[bad]] = False
        ds, dg = np.where(bad, 0.0, ds), np.where(bad, 0.0, dg)
        # Damped: gamma changes by at most half its value per step.
        dg = np.clip(dg, -0.5 * gamma[a], 0.5 * gamma[a])
        ds = np.clip(ds, -4.0, 4.0)
        s[a] += ds
        gamma[a] += dg
        converged = (np.abs(dg) <= 1e-14 * gamma[a]) & (np.abs(ds) <= 1e-12 * (1 + np.abs(s[a])))
        active = a[~converged & ~bad]

    r1, r2, j = _system(p, s, gamma, pivot, distance, ratio, _mass_residual(p))
    # Only a converged root is worth proving: a witness far inside the certified region
    # would be sound but would under-report the radius; those go to the bisection.
    converged = (np.abs(r2) <= 1e-9) & (np.abs(r1) <= 1e-9 * np.minimum(p, 1 - p))
    remaining = np.flatnonzero(ok & converged & (gamma > 0))
    for backoff in _BACKOFFS:
        if remaining.size == 0:
            break
        sub = remaining
        g_c = gamma[sub] * (1 - backoff)
        step = g_c - gamma[sub]
        with np.errstate(divide="ignore", invalid="ignore"):
            s_mass = s[sub] - j[1][sub] / j[0][sub] * step
            s_half = s[sub] - j[3][sub] / j[2][sub] * step
        s_w = 0.5 * (s_mass + s_half)
        good = _witness(p[sub], s_w, g_c, pivot[sub], ratio)
        gamma_out[sub[good]] = g_c[good]
        proven[sub[good]] = True
        remaining = sub[~good]
    return gamma_out, proven


def _discrete_threshold(ratio: LikelihoodRatio) -> float:
    """Smallest p whose discrete-only lower bound reaches 1/2 (greedy set, inverted)."""
    nu_head = np.cumsum(ratio.nu)
    j = min(int(np.searchsorted(nu_head, 0.5)), ratio.n_regions - 1)
    nu_before = nu_head[j - 1] if j > 0 else 0.0
    frac = min(1.0, (0.5 - nu_before) / ratio.nu[j])
    mu_before = ratio.mu_zero + (ratio.mu[:j].sum() if j > 0 else 0.0)
    return float(min(mu_before + frac * ratio.mu[j], 1 - 1e-16))


def _system(p, s, gamma, pivot, distance, ratio, residual):
    """Residuals (mass, bound - 1/2) and Jacobian (F_s, F_g, G_s, G_g) at (s, gamma)."""
    d = (pivot[:, None] - distance) / gamma[:, None]
    tau = s[:, None] + d + gamma[:, None] / 2
    dtau_dg = -d / gamma[:, None] + 0.5
    below, above, dens = normal_terms(tau)
    shifted = tau - gamma[:, None]
    with np.errstate(over="ignore"):
        dens_nu = np.exp(-0.5 * shifted * shifted) / _SQRT_2PI
    mu, nu = ratio.mu, ratio.nu
    f = ratio.mu_zero + below @ mu
    f_tail = above @ mu
    g = ndtr(shifted) @ nu
    r1 = residual(f, f_tail, g, slice(None))
    r2 = g - 0.5
    j = (dens @ mu, (dens * dtau_dg) @ mu, dens_nu @ nu, (dens_nu * (dtau_dg - 1.0)) @ nu)
    return r1, r2, j


def _witness(p, s_w, gamma, pivot, ratio) -> np.ndarray:
    """True where (s_w, gamma) proves lower(p, gamma) > 1/2 despite rounding."""
    curve = _Curve(ratio, gamma, pivot)
    f, f_tail, _, g = curve.evaluate(s_w)
    k_err = 16.0 * (ratio.n_regions + 2) * np.finfo(float).eps
    mass_ok = np.where(p > 0.5, f_tail >= (1.0 - p) * (1 + k_err) + 1e-300,
                       f <= p * (1 - k_err))
    margin = _safety_margin(g, p, curve.log_kappa(s_w), ratio.n_regions)
    return mass_ok & (g - margin > 0.5) & np.isfinite(s_w)
