"""Fast certified shift: Newton on the joint system, then a proof of certification.

The largest certified Gaussian shift at a fixed discrete change is the ``gamma*`` where the
Neyman–Pearson set of mu-mass ``p`` has its ``nu`` mass exactly at the rule's level.  In
the unknowns ``(s, gamma)`` (``log kappa = log_ratio[pivot] + gamma s``) this is the 2x2
system

* two-class majority: ``F(s, gamma) = pA``, ``G(s, gamma) = 1/2``;
* flag (threshold ``tau``): ``F(s, gamma) = pc_lower``, ``G(s, gamma) = tau``;
* benign: ``F(s, gamma) = 1 - pc_upper``, ``nu(S^c)(s, gamma) = tau``,

solved by Newton's method from the sequential-composition radius (a lower bound on it).

Newton gives an estimate, not a guarantee, so the reported shift ``gamma_c`` slightly below
it is *proved* certified by a witness: a point ``s_w`` whose set has mu-mass at most the
target (so ``s_w`` lies left of the exact threshold), with floating-point margins, and
whose ``nu(S)`` still clears the level (flag, majority: ``G`` increases in ``s``, so the
exact bound is at least ``G(s_w)``) or whose ``nu(S^c)`` is already below it (benign:
``nu(S^c)`` decreases in ``s``).  Inputs whose proof fails are handed back to the
bisection.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from hybridcert.certificate.bounds import (
    ABS_MARGIN,
    REL_MARGIN,
    SQRT_2PI,
    GaussianCurve,
    discrete_solution,
    mass_residual,
    normal_terms,
    relative_error,
    solve_offset,
)
from hybridcert.certificate.rules import MAJORITY, Rule
from hybridcert.noise.ratio import LikelihoodRatio

_NEWTON_STEPS = 80
# A Newton step this small (relative) means the next would be ~its square: converged.
_STEP_TOL = 1e-9
# Multiples of the estimated back-off (relative distance below the Newton estimate) at
# which a witness is tried, in order.
_BACKOFFS = (1.25, 3.0, 30.0, 1e3, 1e5)
_EPS = np.finfo(float).eps


def newton_gamma(p: np.ndarray, ratio: LikelihoodRatio, rule: Rule = MAJORITY,
                 hint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Certified shifts and a mask of the inputs for which they are proven.

    ``p`` is the bound the rule reads (two-class majority: ``pA``; flag: lower bound on
    ``pc``; benign: upper bound on ``pc``); every input must be certified at shift 0 and
    have a finite certified shift.  ``hint`` (optional, per input) is a starting shift,
    e.g. the certified shift of a smaller token budget (an upper bound on this one's).
    """
    n = p.size
    gamma_out = np.zeros(n)
    proven = np.zeros(n, dtype=bool)
    if ratio.n_regions == 0 or n == 0:
        return gamma_out, proven
    mass, mass_tail = (1.0 - p, p.copy()) if rule.reads_upper else (p.copy(), 1.0 - p)
    level, on_tail = rule.level, rule.reads_upper
    exact = discrete_solution(mass, mass_tail, ratio)
    gamma = _start(mass, mass_tail, exact, ratio, rule)
    if hint is not None:
        # Between the sequential shift (below gamma*) and the smaller budget's (above it).
        usable = np.isfinite(hint) & (hint > gamma)
        gamma = np.where(usable, gamma + 0.9 * (hint - gamma), gamma)
    pivot = ratio.log_ratio[exact.pivot]
    s0 = np.clip(ndtri(np.clip(exact.fraction, 1e-300, 1 - 1e-16)), -38, 38) - gamma / 2
    s = s0

    ok = np.ones(n, dtype=bool)
    active = np.arange(n)
    for _ in range(_NEWTON_STEPS):
        if active.size == 0:
            break
        a = active
        r1, r2, j, values = _system(mass[a], mass_tail[a], s[a], gamma[a], pivot[a], ratio,
                                    level, on_tail, values=True)
        r1, r2, j = _log_scale(r1, r2, j, values, mass[a], mass_tail[a], level)
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
        converged = (np.abs(dg) <= _STEP_TOL * gamma[a]) \
            & (np.abs(ds) <= _STEP_TOL * (1 + np.abs(s[a])))
        active = a[~converged & ~bad]

    r1, r2, j = _system(mass, mass_tail, s, gamma, pivot, ratio, level, on_tail)
    # Only a converged root is worth proving: a witness far inside the certified region
    # would be sound but would under-report the radius.  Inputs the joint Newton did not
    # converge on go to the safeguarded nested solver, then (if still not) to bisection.
    level_scale = 2.0 * min(level, 1.0 - level)

    def is_converged(r1, r2, idx=slice(None)):
        return (np.abs(r2) <= 1e-9 * level_scale) \
            & (np.abs(r1) <= 1e-9 * np.minimum(mass[idx], mass_tail[idx]))

    converged = is_converged(r1, r2) & ok & np.isfinite(gamma)
    retry = np.flatnonzero(~converged)
    if retry.size:
        s[retry], gamma[retry] = _nested(mass[retry], mass_tail[retry], pivot[retry], ratio,
                                         rule, gamma[retry], s[retry])
        r1, r2, j = _system(mass, mass_tail, s, gamma, pivot, ratio, level, on_tail)
        converged = is_converged(r1, r2) & np.isfinite(gamma)
    remaining = np.flatnonzero(converged & (gamma > 0))
    if remaining.size == 0:
        return gamma_out, proven
    # Back-off needed: the margin on the bound (and the step left that secures the mass
    # condition) over the bound's change per unit of gamma along the mass curve.
    sub = remaining
    f_s, f_g, b_s, b_g = (x[sub] for x in j)
    scale = np.minimum(mass[sub], mass_tail[sub])
    k = relative_error(ratio)
    _, _, err_value, err_mass = GaussianCurve(ratio, gamma[sub], pivot[sub]).nu_masses(s[sub])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ds_mass = 2.0 * (k * scale + 1e-15 * scale + err_mass + 1e-300) / f_s
        along = np.abs(b_g - b_s * f_g / f_s)
        need = ((REL_MARGIN + k) * level + 2.0 * err_value + ABS_MARGIN) \
            + np.abs(b_s) * ds_mass
        base = need / (gamma[sub] * along)
    base = np.where(np.isfinite(base) & (base > 0), base, 1e-9)
    for factor in _BACKOFFS:
        if sub.size == 0:
            break
        backoff = np.maximum(factor * base, 1e-15)
        g_c = gamma[sub] * (1.0 - backoff)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_w = s[sub] + j[1][sub] / j[0][sub] * (gamma[sub] - g_c) - ds_mass
        good = (backoff < 1e-3) & _witness(mass[sub], mass_tail[sub], s_w, g_c, pivot[sub],
                                           ratio, rule)
        gamma_out[sub[good]] = g_c[good]
        proven[sub[good]] = True
        keep = ~good
        sub, base, ds_mass = sub[keep], base[keep], ds_mass[keep]
    return gamma_out, proven


def _nested(mass, mass_tail, pivot, ratio: LikelihoodRatio, rule: Rule, gamma, s):
    """Safeguarded Newton on the shift alone: at each trial ``gamma`` the mass equation is
    solved for ``s`` (bracketed, :func:`solve_offset`), the bound's distance to the level
    decides the side of a bracket ``[0, Gaussian-only shift]`` (the rule is monotone in
    ``gamma``), and the next trial is the Newton step along the mass curve
    (``dB/dgamma = B_g - B_s F_g / F_s``) when it stays inside the bracket, else the
    midpoint.  Returns ``(s, gamma)``; the caller checks convergence."""
    level, on_tail = rule.level, rule.reads_upper
    m = mass.size
    z_mass = np.where(mass_tail < mass, -ndtri(mass_tail), ndtri(mass))
    with np.errstate(invalid="ignore"):
        top = (ndtri(level) + z_mass) if on_tail else (z_mass - ndtri(level))
    lo = np.zeros(m)
    hi = np.where(np.isfinite(top) & (top > 0), top * (1 + 1e-9) + 1e-300, np.nan)
    gamma = np.where(np.isfinite(gamma) & (gamma > 0) & (gamma < hi), gamma, 0.5 * hi)
    s = np.where(np.isfinite(s), s, 0.0)
    level_scale = 2.0 * min(level, 1.0 - level)
    active = np.flatnonzero(np.isfinite(hi))
    for _ in range(_NEWTON_STEPS):
        if active.size == 0:
            break
        a = active
        curve = GaussianCurve(ratio, gamma[a], pivot[a])
        s_new, found = solve_offset(curve, np.arange(a.size), s[a],
                                    mass_residual(mass[a], mass_tail[a]))
        s[a] = np.where(found, s_new, s[a])
        _, r2, j = _system(mass[a], mass_tail[a], s[a], gamma[a], pivot[a], ratio, level,
                           on_tail)
        certified_side = (-r2 if on_tail else r2) >= 0
        lo[a[certified_side]] = gamma[a[certified_side]]
        hi[a[~certified_side]] = gamma[a[~certified_side]]
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = gamma[a] - r2 / (j[3] - j[2] * j[1] / j[0])
        inside = np.isfinite(newton) & (newton > lo[a]) & (newton < hi[a])
        done = ~found | (np.abs(r2) <= 1e-12 * level_scale) | (hi[a] - lo[a] <= 1e-14 * hi[a])
        step = np.where(inside, newton, 0.5 * (lo[a] + hi[a]))
        gamma[a[~done]] = step[~done]
        active = a[~done]
    return s, gamma


def _start(mass, mass_tail, exact, ratio: LikelihoodRatio, rule: Rule) -> np.ndarray:
    """Sequential-composition shift (the better order; a lower bound on gamma*), floored at
    a thousandth of the Gaussian-only shift (an upper bound on it)."""
    from hybridcert.certificate.thresholds import discrete_inverse

    level = rule.level
    z_mass = np.where(mass_tail < mass, -ndtri(mass_tail), ndtri(mass))
    star = discrete_inverse(ratio, rule)
    with np.errstate(divide="ignore", invalid="ignore"):
        if rule.reads_upper:
            # upper(q; gamma) = Phi(Phi^-1(q) + gamma) for the Gaussian part alone.
            first = ndtri(level) - ndtri(np.clip(exact.tail, 1e-300, level))
            second = ndtri(star) + z_mass if np.isfinite(star) else np.zeros_like(z_mass)
            gaussian_only = ndtri(level) + z_mass
        else:
            first = ndtri(np.clip(exact.head, level, 1 - 1e-16)) - ndtri(level)
            second = z_mass - ndtri(star) if np.isfinite(star) else np.zeros_like(z_mass)
            gaussian_only = z_mass - ndtri(level)
    gamma = np.maximum.reduce([np.nan_to_num(first, nan=0.0, posinf=0.0, neginf=0.0),
                               np.nan_to_num(second, nan=0.0, posinf=0.0, neginf=0.0),
                               1e-3 * np.nan_to_num(gaussian_only, nan=1.0, posinf=1.0)])
    return np.where(gamma > 0, gamma, 1e-3)


def _log_scale(r1, r2, j, values, mass, mass_tail, level):
    """The system in logs: ``log(F / p)`` (on the precise tail) and ``log(B / level)``.

    Both F and B live in Gaussian tails when ``p`` is near 0 or 1 or the level is small
    (tau = 4.6e-5): there a Newton step on the linear residual moves by about one Mills
    ratio per iteration, while on the log scale it converges quadratically from afar.
    Inputs with a zero value keep the linear residual."""
    mass_value, bound_value = values
    target = np.where(mass_tail < mass, mass_tail, mass)
    use = (mass_value > 0) & (bound_value > 0) & (target > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = np.log(mass_value / target) * np.where(mass_tail < mass, -1.0, 1.0)
        l2 = np.log(bound_value / level)
        j_log = (j[0] / mass_value, j[1] / mass_value, j[2] / bound_value,
                 j[3] / bound_value)
    return (np.where(use, l1, r1), np.where(use, l2, r2),
            tuple(np.where(use, x, y) for x, y in zip(j_log, j, strict=True)))


def _system(mass, mass_tail, s, gamma, pivot, ratio, level, on_tail, values=False):
    """Residuals (mass, bound - level) and Jacobian (F_s, F_g, B_s, B_g) at (s, gamma),
    where the bound B is ``nu(S)`` or, ``on_tail``, ``nu(S^c)``.  ``values``: also return
    (the mass on its precise side, B)."""
    d = (pivot[:, None] - ratio.log_ratio[None, :]) / gamma[:, None]
    tau = s[:, None] + d + gamma[:, None] / 2
    dtau_dg = -d / gamma[:, None] + 0.5
    below, above, dens = normal_terms(tau)
    shifted = tau - gamma[:, None]
    with np.errstate(over="ignore"):
        dens_nu = np.exp(-0.5 * shifted * shifted) / SQRT_2PI
    mu, nu = ratio.mu, ratio.nu
    f = ratio.mu_zero + below @ mu
    f_tail = above @ mu
    r1 = mass_residual(mass, mass_tail)(f, f_tail, slice(None))
    g_s, g_g = dens_nu @ nu, (dens_nu * (dtau_dg - 1.0)) @ nu
    if on_tail:
        bound = ratio.nu_infinite + ndtr(-shifted) @ nu
        g_s, g_g = -g_s, -g_g
    else:
        bound = ndtr(shifted) @ nu
    r2 = bound - level
    j = (dens @ mu, (dens * dtau_dg) @ mu, g_s, g_g)
    if values:
        return r1, r2, j, (np.where(mass_tail < mass, f_tail, f), bound)
    return r1, r2, j


def _witness(mass, mass_tail, s_w, gamma, pivot, ratio: LikelihoodRatio,
             rule: Rule) -> np.ndarray:
    """True where ``(s_w, gamma)`` proves the rule despite rounding."""
    curve = GaussianCurve(ratio, gamma, pivot)
    f, f_tail, _ = curve.mass(s_w)
    g, g_tail, err_value, err_mass = curve.nu_masses(s_w)
    k = relative_error(ratio)
    # The exact mu-mass of the witness set is at most the target's.
    mass_ok = np.where(mass_tail < mass,
                       f_tail * (1 - k) - err_mass >= mass_tail * (1 + 1e-15) + 1e-300,
                       f * (1 + k) + err_mass <= mass * (1 - 1e-15))
    if rule.reads_upper:
        high = g_tail + (REL_MARGIN + k) * g_tail + err_value + ABS_MARGIN \
            + ratio.nu_dropped
        bound_ok = rule.holds(None, high)
    else:
        low = g - (REL_MARGIN + k) * g - err_value - ABS_MARGIN
        bound_ok = rule.holds(low)
    return mass_ok & bound_ok & np.isfinite(s_w)
