"""The joint Neyman–Pearson bound (THEORY.md sections 2–3).

``lower_bound(p, ratio)`` is the smallest probability any classifier can give the top
class under the perturbed noise ``nu``, given probability ``p`` under the clean noise
``mu``.  The worst-case set is ``S = {Lambda <= kappa}``; with a Gaussian part it is, in
discrete region ``k``, the half-line ``t <= tau_k``, and one unknown (``log kappa``) is
found by a safeguarded Newton iteration on a monotone function.

Numerics
--------
* The unknown is parametrised around a *pivot* region (the region the exact discrete
  solution cuts): ``log kappa = log_ratio[pivot] + gamma * s``, so that
  ``tau_k = s + (log_ratio[pivot] - log_ratio[k]) / gamma + gamma / 2`` stays exact for
  the pivot as ``gamma -> 0`` while every other region saturates cleanly.
* For ``p > 1/2`` the equation is solved on the upper tail ``1 - F`` so that ``p`` up to
  ``1 - 1e-12`` keeps full relative precision.
* The root is bracketed and the *certified end* of the bracket (the one whose ``mu``-mass
  does not exceed ``p``) is reported, then lowered by a margin that covers floating-point
  error (:func:`_safety_margin`), so rounding never favours the user.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from hybridcert._validation import check_probability
from hybridcert.noise.ratio import LikelihoodRatio

_EPS = np.finfo(float).eps
_REL_MARGIN = 1e-12
_SQRT_2PI = np.sqrt(2.0 * np.pi)
_MAX_ITER = 200


def lower_bound(p, ratio: LikelihoodRatio):
    """Smallest ``P_nu(f = A)`` over all classifiers with ``P_mu(f = A) >= p``.

    Parameters
    ----------
    p : float or array_like
        Lower confidence bound(s) on the top-class probability under clean noise, in [0, 1].
    ratio : LikelihoodRatio
        Joint likelihood ratio of the perturbation (see :mod:`hybridcert.noise`).

    Returns
    -------
    float or ndarray
        The bound, never above the exact value (float error is rounded downwards).
    """
    p_arr = check_probability("p", p)
    out = _lower_bound(p_arr.ravel(), ratio).reshape(p_arr.shape)
    return float(out) if out.ndim == 0 else out


def upper_bound(q, ratio: LikelihoodRatio):
    """Largest ``P_nu(f = B)`` over all classifiers with ``P_mu(f = B) <= q``.

    The upper set ``{Lambda >= kappa'}`` of mu-mass ``q`` is the complement of a lower
    set of mass ``1 - q``, so ``upper(q) = 1 - lower(1 - q)``.
    """
    q_arr = check_probability("q", q)
    out = _upper_bound(q_arr.ravel(), ratio).reshape(q_arr.shape)
    return float(out) if out.ndim == 0 else out


def _upper_bound(q: np.ndarray, ratio: LikelihoodRatio, gamma=None) -> np.ndarray:
    if ratio.is_identity and (gamma is None or not np.any(gamma)):
        return q.copy()
    return np.minimum(1.0, 1.0 - _lower_bound(_one_minus_down(q), ratio, gamma))


def _one_minus_down(q: np.ndarray) -> np.ndarray:
    """``1 - q`` rounded towards zero, so that a lower bound evaluated there stays valid."""
    t = 1.0 - q
    inexact = (1.0 - t) != q
    return np.where(inexact & (t > 0), np.nextafter(t, 0.0), t)


def _lower_bound(p: np.ndarray, ratio: LikelihoodRatio, gamma=None) -> np.ndarray:
    """Vectorised lower bound; ``gamma`` (per input, optional) adds a Gaussian shift to
    the ratio's own in L2."""
    gamma = np.full(p.shape, ratio.gamma) if gamma is None else np.hypot(ratio.gamma, gamma)
    if ratio.is_identity and not gamma.any():
        return p.copy()
    exact = _discrete(p, ratio)
    value, log_kappa = exact.lower.copy(), exact.log_kappa.copy()
    shifted = np.flatnonzero(gamma > 0)
    if shifted.size:
        value[shifted], log_kappa[shifted] = _solve_gaussian(
            p[shifted], ratio, gamma[shifted], exact.pivot[shifted], exact.fraction[shifted])
    return _apply_margin(value, p, log_kappa, ratio)


def _apply_margin(value, p, log_kappa, ratio: LikelihoodRatio) -> np.ndarray:
    margin = _safety_margin(value, p, log_kappa, ratio.n_regions)
    return np.clip(value - margin, 0.0, 1.0)


def _safety_margin(value, p, log_kappa, n_regions: int) -> np.ndarray:
    """Upper bound on the floating-point error of a computed lower bound.

    Sums over K regions carry relative error ~K eps; an error of delta in the mu-mass
    moves the bound by at most kappa * delta (kappa = the boundary likelihood ratio, the
    slope of lower(p)).  A fixed 1e-12 relative part keeps exact ties (lower = 1/2) on
    the non-certified side.
    """
    scale = np.minimum(p, 1.0 - p)
    k_eps = 8.0 * (n_regions + 2) * _EPS
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        mass_error = np.exp(np.log(k_eps * np.maximum(scale, 1e-300))
                            + np.minimum(log_kappa, 700.0))
    mass_error = np.where(np.isfinite(mass_error), mass_error, np.inf)
    return (_REL_MARGIN + k_eps) * value + np.where(scale > 0, mass_error, 0.0)


class _Exact:
    """Exact gamma = 0 solution: greedy union of regions by increasing ratio."""

    def __init__(self, lower, pivot, fraction, log_kappa):
        self.lower, self.pivot, self.fraction, self.log_kappa = lower, pivot, fraction, log_kappa


def _discrete(p: np.ndarray, ratio: LikelihoodRatio) -> _Exact:
    l, mu, nu = ratio.log_ratio, ratio.mu, ratio.nu
    n, k = p.size, ratio.n_regions
    if k == 0:
        zeros = np.zeros(n)
        return _Exact(zeros, np.zeros(n, dtype=int), zeros.copy(), np.full(n, -np.inf))
    head = ratio.mu_zero + np.cumsum(mu)                       # mu(S) after region j
    tail = np.cumsum(mu[::-1])[::-1]                           # mu of regions j..K-1
    nu_head = np.cumsum(nu)
    nu_tail = ratio.nu_infinite + np.cumsum(nu[::-1])[::-1]
    upper = p > 0.5
    # Low side: first j with head[j] >= p.  High side: last j with tail[j] >= 1 - p.
    j_low = np.minimum(np.searchsorted(head, p, side="left"), k - 1)
    j_high = np.clip(k - 1 - np.searchsorted(tail[::-1], 1.0 - p, side="left"), 0, k - 1)
    j = np.where(upper, j_high, j_low)
    before = np.where(j > 0, head[np.maximum(j - 1, 0)], ratio.mu_zero)
    after = np.where(j < k - 1, tail[np.minimum(j + 1, k - 1)], 0.0)
    nu_before = np.where(j > 0, nu_head[np.maximum(j - 1, 0)], 0.0)
    nu_after = np.where(j < k - 1, nu_tail[np.minimum(j + 1, k - 1)], ratio.nu_infinite)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac_low = np.clip((p - before) / mu[j], 0.0, 1.0)
        rest_high = np.clip(((1.0 - p) - after) / mu[j], 0.0, 1.0)
    lower = np.where(upper, 1.0 - (nu_after + rest_high * nu[j]),
                     nu_before + frac_low * nu[j])
    fraction = np.where(upper, 1.0 - rest_high, frac_low)
    lower = np.where(p <= ratio.mu_zero, 0.0, lower)
    lower = np.where(p >= 1.0, nu_head[-1], lower)
    return _Exact(np.clip(lower, 0.0, 1.0), j, fraction, l[j])


def normal_terms(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Phi(tau)``, ``Phi(-tau)`` (each accurate in its small tail) and ``phi(tau)``."""
    small = ndtr(-np.abs(tau))
    below = np.where(tau < 0, small, 1.0 - small)
    above = np.where(tau < 0, 1.0 - small, small)
    with np.errstate(over="ignore"):
        density = np.exp(-0.5 * tau * tau) / _SQRT_2PI
    return below, above, density


class _Curve:
    """F (mu-mass of S), its upper tail, its slope and G (nu-mass of S) as functions of
    the offset ``s`` for a batch of inputs with per-input ``gamma`` and pivot."""

    def __init__(self, ratio: LikelihoodRatio, gamma: np.ndarray, pivot_log_ratio: np.ndarray):
        self.ratio = ratio
        self.gamma = gamma
        self.pivot = pivot_log_ratio
        with np.errstate(over="ignore"):
            self.shift = ((pivot_log_ratio[:, None] - ratio.log_ratio[None, :])
                          / gamma[:, None] + gamma[:, None] / 2.0)

    def evaluate(self, s: np.ndarray, idx: np.ndarray | slice = slice(None)):
        """Return (F, 1 - F, dF/ds, G) at offsets ``s`` for inputs ``idx``."""
        tau = s[:, None] + self.shift[idx]
        below, above, density = normal_terms(tau)
        mu, nu = self.ratio.mu, self.ratio.nu
        f = self.ratio.mu_zero + below @ mu
        f_tail = above @ mu
        slope = density @ mu
        g = ndtr(tau - self.gamma[idx, None]) @ nu
        return f, f_tail, slope, g

    def log_kappa(self, s: np.ndarray, idx=slice(None)) -> np.ndarray:
        return self.pivot[idx] + self.gamma[idx] * s


def _solve_gaussian(p, ratio: LikelihoodRatio, gamma, pivot, fraction):
    """Lower bound and log kappa for inputs with a Gaussian shift ``gamma > 0``."""
    n = p.size
    lower = np.zeros(n)
    log_kappa = np.full(n, -np.inf)
    if ratio.n_regions == 0:
        return lower, log_kappa
    curve = _Curve(ratio, gamma, ratio.log_ratio[pivot])
    full = p >= 1.0
    lower[full] = ratio.nu.sum()
    log_kappa[full] = np.inf
    idx = np.flatnonzero((p > ratio.mu_zero) & ~full)
    if idx.size:
        frac = np.clip(fraction[idx], 1e-300, 1.0 - 1e-16)
        s0 = np.clip(ndtri(frac), -38.0, 38.0) - gamma[idx] / 2.0
        s_lo = solve_offset(curve, idx, s0, _mass_residual(p[idx]))
        lower[idx] = curve.evaluate(s_lo, idx)[3]
        log_kappa[idx] = curve.log_kappa(s_lo, idx)
    return lower, log_kappa


def _mass_residual(p: np.ndarray):
    """``F - p`` on whichever tail keeps precision (increasing in s)."""
    p_tail, upper = 1.0 - p, p > 0.5

    def residual(f, f_tail, g, sub):
        return np.where(upper[sub], p_tail[sub] - f_tail, f - p[sub])

    return residual


def solve_offset(curve: _Curve, idx: np.ndarray, s0: np.ndarray, residual) -> np.ndarray:
    """Largest offset ``s`` (to float precision) with ``residual <= 0``.

    ``residual(F, 1 - F, G, sub)`` must be increasing in ``s``; ``sub`` indexes the
    entries of ``idx`` being evaluated.  The root is bracketed by expanding steps from
    ``s0``, then refined by Newton steps that fall back to bisection outside the bracket.
    Returns the lower end of the final bracket.
    """

    def evaluate(s, sub):
        f, f_tail, slope, g = curve.evaluate(s, idx[sub])
        return residual(f, f_tail, g, sub), slope

    m = idx.size
    lo, hi = s0.copy(), s0.copy()
    r0, _ = evaluate(s0, np.arange(m))
    lo_ok, hi_ok = r0 <= 0, r0 >= 0
    step = np.ones(m)
    for _ in range(_MAX_ITER):
        need_lo, need_hi = np.flatnonzero(~lo_ok), np.flatnonzero(~hi_ok)
        if need_lo.size == 0 and need_hi.size == 0:
            break
        for need, sign in ((need_lo, -1.0), (need_hi, 1.0)):
            if need.size == 0:
                continue
            trial = s0[need] + sign * step[need]
            r, _ = evaluate(trial, need)
            below, above = need[r <= 0], need[r >= 0]
            lo[below] = np.maximum(lo[below], trial[r <= 0]) if sign > 0 else trial[r <= 0]
            hi[above] = np.minimum(hi[above], trial[r >= 0]) if sign < 0 else trial[r >= 0]
            lo_ok[below] = True
            hi_ok[above] = True
        step *= 2.0
    else:  # pragma: no cover - the mass function spans (mu_zero, 1) on a finite range
        raise RuntimeError("could not bracket the Neyman-Pearson threshold")

    x = 0.5 * (lo + hi)
    todo = np.flatnonzero(hi > lo)
    for _ in range(_MAX_ITER):
        if todo.size == 0:
            break
        xt = x[todo]
        r, slope = evaluate(xt, todo)
        lo[todo[r <= 0]] = xt[r <= 0]
        hi[todo[r >= 0]] = xt[r >= 0]
        a, b = lo[todo], hi[todo]
        tol = 4.0 * _EPS * np.maximum(1.0, np.abs(xt))
        done = (r == 0) | (b - a <= tol)
        with np.errstate(divide="ignore", invalid="ignore"):
            step_n = -r / slope
        newton = xt + step_n
        # Converged Newton steps would land on the same side forever: step across the
        # root by a few ulps instead, which closes the bracket.
        small = np.abs(step_n) < tol
        newton = np.where(small, xt - np.sign(r) * 2.0 * tol, newton)
        inside = np.isfinite(newton) & (newton > a) & (newton < b)
        x[todo] = np.where(inside, newton, 0.5 * (a + b))
        todo = todo[~done]
    return lo
