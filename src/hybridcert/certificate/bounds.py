"""The joint Neyman–Pearson bound (docs/THEORY.md sections 2–3).

``lower_bound(p, ratio)`` is the smallest probability any classifier can give the top
class under the perturbed noise ``nu``, given probability ``p`` under the clean noise
``mu``.  The worst-case set is ``S = {Lambda <= kappa}`` of mu-mass ``p``; with a Gaussian
part it is, in discrete region ``k``, the half-line ``t <= tau_k``, and one unknown
(``log kappa``) is found by a safeguarded Newton iteration on a monotone function.
``upper_bound(q, ratio)`` is ``nu`` of the complement of the set of mu-mass ``1 - q``.

Numerics
--------
* Both ``nu(S)`` and ``nu(S^c)`` are computed *directly*, each as a sum of positive terms
  (never as ``1 -`` the other), so a tiny lower bound and a tiny upper bound keep full
  relative precision.  The mass ``p`` is carried as the pair ``(p, 1 - p)`` and the
  boundary region is located from whichever of the two is the smaller (the one that is
  exact: ``upper_bound(q)`` passes ``q`` itself as ``1 - p``).
* The unknown is parametrised around a *pivot* region (the region the exact discrete
  solution cuts): ``log kappa = log_ratio[pivot] + gamma * s``, so that
  ``tau_k = s + (log_ratio[pivot] - log_ratio[k]) / gamma + gamma / 2`` stays exact for
  the pivot as ``gamma -> 0`` while every other region saturates cleanly.
* The root is bracketed and the end whose ``mu``-mass does not exceed ``p`` is used; then
  ``nu(S)`` is lowered and ``nu(S^c)`` raised by a margin covering floating-point error
  (:func:`_safety_margin`), so rounding never favours the user.
* Shifts ``gamma >= GAMMA_SEPARATED`` separate the clean and shifted Gaussian completely at
  double precision: the lower bound is 0 for ``p < 1`` and the upper bound 1 for ``q > 0``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from hybridcert._validation import check_probability
from hybridcert.noise.ratio import LikelihoodRatio

_EPS = np.finfo(float).eps
REL_MARGIN = 1e-12
ABS_MARGIN = 1e-300
SQRT_2PI = np.sqrt(2.0 * np.pi)
_MAX_ITER = 200
_MAX_BRACKET_DOUBLINGS = 64

#: Gaussian shifts (standard deviations) at or beyond which the bounds are exactly 0 / 1
#: in double precision: ``lower(p) <= Phi(Phi^-1(p) - gamma) < 1e-320`` for every double
#: ``p < 1`` (``Phi^-1(p) <= 38.5``), and symmetrically for the upper bound.
GAMMA_SEPARATED = 80.0


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
        The bound (a probability), never above the exact value: floating-point error is
        rounded downwards, tiny values included.
    """
    p_arr = check_probability("p", p)
    flat = p_arr.ravel()
    out = mass_bounds(flat, 1.0 - flat, ratio)[0].reshape(p_arr.shape)
    return float(out) if out.ndim == 0 else out


def upper_bound(q, ratio: LikelihoodRatio):
    """Largest ``P_nu(f = B)`` over all classifiers with ``P_mu(f = B) <= q``.

    The upper set ``{Lambda >= kappa'}`` of mu-mass ``q`` is the complement of a lower
    set of mass ``1 - q``; its ``nu`` mass is computed directly (not as ``1 - lower``), so
    tiny upper bounds keep their precision.

    Parameters
    ----------
    q : float or array_like
        Upper confidence bound(s) on a class probability under clean noise, in [0, 1].
    ratio : LikelihoodRatio

    Returns
    -------
    float or ndarray
        The bound, never below the exact value.
    """
    q_arr = check_probability("q", q)
    flat = q_arr.ravel()
    out = mass_bounds(1.0 - flat, flat, ratio)[1].reshape(q_arr.shape)
    return float(out) if out.ndim == 0 else out


def lower_bounds(p: np.ndarray, ratio: LikelihoodRatio, gamma=None) -> np.ndarray:
    """Vectorised lower bound; ``gamma`` (per input, optional) adds a Gaussian shift to
    the ratio's own in L2."""
    return mass_bounds(p, 1.0 - p, ratio, gamma)[0]


def mass_bounds(p: np.ndarray, p_tail: np.ndarray, ratio: LikelihoodRatio, gamma=None):
    """``(nu(S) rounded down, nu(S^c) rounded up)`` for the Neyman–Pearson lower set ``S``
    of mu-mass ``p``; ``p_tail = 1 - p`` must be exact where it is the smaller of the two.
    """
    p = np.asarray(p, dtype=float)
    p_tail = np.asarray(p_tail, dtype=float)
    gamma = np.full(p.shape, ratio.gamma) if gamma is None else np.hypot(ratio.gamma, gamma)
    if ratio.is_identity and not gamma.any():
        return p.copy(), p_tail.copy()
    exact = discrete_solution(p, p_tail, ratio)
    head, tail, log_kappa = exact.head.copy(), exact.tail.copy(), exact.log_kappa.copy()
    separated = gamma >= GAMMA_SEPARATED
    if separated.any():
        full = p_tail <= 0
        head[separated] = np.where(full, exact.head, 0.0)[separated]
        tail[separated] = np.where(full, ratio.nu_infinite, 1.0)[separated]
        log_kappa[separated] = -np.inf
    value_error = np.zeros(p.shape)
    mass_error = np.zeros(p.shape)
    shifted = np.flatnonzero((gamma > 0) & ~separated)
    if shifted.size:
        (head[shifted], tail[shifted], log_kappa[shifted], value_error[shifted],
         mass_error[shifted]) = _solve_gaussian(
            p[shifted], p_tail[shifted], ratio, gamma[shifted], exact.pivot[shifted],
            exact.fraction[shifted])
    scale = np.minimum(p, p_tail)
    low = head - _safety_margin(head, scale, log_kappa, ratio, value_error, mass_error)
    # nu moved into the ratio-0 atom may lie outside S (not when S is everything).
    dropped = np.where(p_tail > 0, ratio.nu_dropped, 0.0)
    high = tail + _safety_margin(tail, scale, log_kappa, ratio, value_error, mass_error) \
        + dropped
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def relative_error(ratio: LikelihoodRatio) -> float:
    """Relative error of a sum of the ratio's masses (K-term sums, the masses' own)."""
    return 8.0 * (ratio.n_regions + 2) * _EPS + ratio.mass_rtol


def _safety_margin(value, scale, log_kappa, ratio: LikelihoodRatio, value_error=0.0,
                   mass_error=0.0) -> np.ndarray:
    """Upper bound on the floating-point error of a computed ``nu`` mass.

    ``value`` carries relative error from sums over K regions (~K eps) and from the masses
    themselves (``ratio.mass_rtol``), plus ``value_error`` (absolute: the normal CDFs'
    arguments carry rounding).  An error in the mu-mass of the set (relative error of the
    sum on the side of ``scale = min(p, 1 - p)``, plus ``mass_error``) moves the bound by at
    most ``kappa`` times as much (``kappa`` = the boundary likelihood ratio, the slope of
    ``lower(p)``).  A fixed 1e-12 relative part keeps exact ties (e.g. lower = 1/2) on the
    non-certified side.
    """
    k_eps = relative_error(ratio)
    # Regions stored with mu = 0 hold a true mass below 1e-307 each.
    mass_error = mass_error + 1e-307 * ratio.n_regions
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        log_error = np.log(k_eps * scale + mass_error) + log_kappa
        slope_error = np.exp(np.minimum(log_error, 709.0))
    slope_error = np.where(scale > 0, np.where(np.isnan(slope_error), np.inf, slope_error),
                           0.0)
    return (REL_MARGIN + k_eps) * value + value_error + slope_error + ABS_MARGIN


class ExactSolution:
    """Exact gamma = 0 solution: greedy union of regions by increasing ratio."""

    def __init__(self, head, tail, pivot, fraction, log_kappa):
        self.head, self.tail = head, tail
        self.pivot, self.fraction, self.log_kappa = pivot, fraction, log_kappa


class CumulativeMasses:
    """Cumulative masses of a ratio's regions (in increasing ratio), with sentinels.

    ``head_mu[j]``: mu of the zero atom and regions ``< j``; ``tail_mu[j]``: mu of regions
    ``>= j``; ``head_nu[j]``: nu of regions ``< j``; ``tail_nu[j]``: nu of regions ``>= j``
    and of the infinity atom.  All are sums of positive terms (accurate relative to
    themselves).
    """

    def __init__(self, ratio: LikelihoodRatio):
        mu, nu = ratio.mu, ratio.nu
        self.head_mu = ratio.mu_zero + np.concatenate([[0.0], np.cumsum(mu)])
        self.tail_mu = np.concatenate([np.cumsum(mu[::-1])[::-1], [0.0]])
        self.head_nu = np.concatenate([[0.0], np.cumsum(nu)])
        self.tail_nu = ratio.nu_infinite + np.concatenate([np.cumsum(nu[::-1])[::-1], [0.0]])


def discrete_solution(p: np.ndarray, p_tail: np.ndarray, ratio: LikelihoodRatio) -> ExactSolution:
    """The greedy set of mu-mass ``p``: regions by increasing ratio, the boundary region
    ``j`` (the pivot) taken fractionally.  The boundary is located from ``p`` or from
    ``p_tail``, whichever is smaller, and both nu masses are summed directly."""
    mu, nu = ratio.mu, ratio.nu
    n, k = p.size, ratio.n_regions
    if k == 0:
        zeros = np.zeros(n)
        return ExactSolution(zeros, np.full(n, ratio.nu_infinite), np.zeros(n, dtype=int),
                      zeros.copy(), np.full(n, -np.inf))
    c = CumulativeMasses(ratio)
    use_tail = p_tail < p
    j_head = np.minimum(np.searchsorted(c.head_mu[1:], p, side="left"), k - 1)
    count = k - np.searchsorted(c.tail_mu[:k][::-1], p_tail, side="left")
    j_tail = np.clip(count - 1, 0, k - 1)
    j = np.where(use_tail, j_tail, j_head)
    # A region whose mu underflowed (mu = 0) is taken whole or not at all.
    has_mu = mu[j] > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        frac_head = np.where(has_mu, np.clip((p - c.head_mu[j]) / mu[j], 0.0, 1.0),
                             (p > c.head_mu[j]).astype(float))
        rest_tail = np.where(has_mu, np.clip((p_tail - c.tail_mu[j + 1]) / mu[j], 0.0, 1.0),
                             (p_tail > c.tail_mu[j + 1]).astype(float))
    frac = np.where(use_tail, 1.0 - rest_tail, frac_head)
    rest = np.where(use_tail, rest_tail, 1.0 - frac_head)
    head = c.head_nu[j] + frac * nu[j]
    tail = c.tail_nu[j + 1] + rest * nu[j]
    return ExactSolution(head, tail, j, frac, ratio.log_ratio[j])


def normal_terms(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Phi(tau)``, ``Phi(-tau)`` (each accurate in its small tail) and ``phi(tau)``."""
    small = ndtr(-np.abs(tau))
    below = np.where(tau < 0, small, 1.0 - small)
    above = np.where(tau < 0, 1.0 - small, small)
    with np.errstate(over="ignore"):
        density = np.exp(-0.5 * tau * tau) / SQRT_2PI
    return below, above, density


class GaussianCurve:
    """F (mu-mass of S), its upper tail, its slope, G = nu(S) and nu(S^c) as functions of
    the offset ``s`` for a batch of inputs with per-input ``gamma`` and pivot."""

    def __init__(self, ratio: LikelihoodRatio, gamma: np.ndarray, pivot_log_ratio: np.ndarray):
        self.ratio = ratio
        self.gamma = gamma
        self.pivot = pivot_log_ratio
        with np.errstate(over="ignore", invalid="ignore"):
            self.shift = ((pivot_log_ratio[:, None] - ratio.log_ratio[None, :])
                          / gamma[:, None] + gamma[:, None] / 2.0)

    def mass(self, s: np.ndarray, idx: np.ndarray | slice = slice(None)):
        """(F, 1 - F, dF/ds) at offsets ``s`` for inputs ``idx``."""
        tau = s[:, None] + self.shift[idx]
        below, above, density = normal_terms(tau)
        mu = self.ratio.mu
        return self.ratio.mu_zero + below @ mu, above @ mu, density @ mu

    def nu_masses(self, s: np.ndarray, idx: np.ndarray | slice = slice(None)):
        """``(nu(S), nu(S^c), value_error, mass_error)`` at offsets ``s``.

        Both nu masses are summed directly.  The errors bound the effect of rounding in
        the normal CDFs' arguments: ``tau_k = s + shift_k`` is off by at most
        ``delta_k = 4 eps (1 + |s| + |shift_k| + gamma)``, which moves ``Phi`` by at most
        ``phi * delta_k``; summed with the nu (value) and mu (mass) weights.
        """
        gamma = self.gamma[idx, None]
        shift = self.shift[idx]
        tau = s[:, None] + shift
        shifted = tau - gamma
        below, above, density_nu = normal_terms(shifted)
        with np.errstate(over="ignore", invalid="ignore"):
            density_mu = np.exp(-0.5 * tau * tau) / SQRT_2PI
            delta = 4.0 * _EPS * (1.0 + np.abs(s)[:, None] + np.abs(shift) + gamma)
            err_nu = np.where(density_nu > 0, density_nu * delta, 0.0)
            err_mu = np.where(density_mu > 0, density_mu * delta, 0.0)
        mu, nu = self.ratio.mu, self.ratio.nu
        return (below @ nu, self.ratio.nu_infinite + above @ nu, err_nu @ nu, err_mu @ mu)

    def log_kappa(self, s: np.ndarray, idx=slice(None)) -> np.ndarray:
        return self.pivot[idx] + self.gamma[idx] * s


def _solve_gaussian(p, p_tail, ratio: LikelihoodRatio, gamma, pivot, fraction):
    """``(nu(S), nu(S^c), log kappa, value_error, mass_error)`` for inputs with a Gaussian
    shift ``gamma > 0`` (errors: see :meth:`GaussianCurve.nu_masses`)."""
    n = p.size
    head = np.zeros(n)
    tail = np.full(n, ratio.nu_infinite)
    log_kappa = np.full(n, -np.inf)
    value_error, mass_error = np.zeros(n), np.zeros(n)
    if ratio.n_regions == 0:
        return head, tail, log_kappa, value_error, mass_error
    c = CumulativeMasses(ratio)
    full = p_tail <= 0
    head[full] = c.head_nu[-1]
    empty = ~full & np.where(p_tail < p, p_tail >= c.tail_mu[0], p <= ratio.mu_zero)
    tail[empty] = c.tail_nu[0]
    idx = np.flatnonzero(~full & ~empty)
    if idx.size:
        curve = GaussianCurve(ratio, gamma, ratio.log_ratio[pivot])
        frac = np.clip(fraction[idx], 1e-300, 1.0 - 1e-16)
        s0 = np.clip(ndtri(frac), -38.0, 38.0) - gamma[idx] / 2.0
        s_lo, found = solve_offset(curve, idx, s0, mass_residual(p[idx], p_tail[idx]))
        g, g_tail, err_value, err_mass = curve.nu_masses(s_lo, idx)
        # Not bracketed (never seen): S shrunk to the ratio-0 atom is always a sound end.
        head[idx] = np.where(found, g, 0.0)
        tail[idx] = np.where(found, g_tail, c.tail_nu[0])
        log_kappa[idx] = np.where(found, curve.log_kappa(s_lo, idx), -np.inf)
        value_error[idx] = np.where(found, err_value, 0.0)
        mass_error[idx] = np.where(found, err_mass, 0.0)
    return head, tail, log_kappa, value_error, mass_error


def mass_residual(p: np.ndarray, p_tail: np.ndarray):
    """``F - p`` on whichever tail keeps precision (increasing in s)."""
    use_tail = p_tail < p

    def residual(f, f_tail, sub):
        return np.where(use_tail[sub], p_tail[sub] - f_tail, f - p[sub])

    return residual


def solve_offset(curve: GaussianCurve, idx: np.ndarray, s0: np.ndarray, residual):
    """Largest offset ``s`` (to float precision) with ``residual <= 0``.

    ``residual(F, 1 - F, sub)`` must be increasing in ``s``; ``sub`` indexes the entries
    of ``idx`` being evaluated.  The root is bracketed by expanding steps from ``s0``, then
    refined by Newton steps that fall back to bisection outside the bracket.

    Returns
    -------
    lo : ndarray
        The lower end of the final bracket (``residual(lo) <= 0``).
    found : ndarray of bool
        False where no ``lo`` was found within 2^64 of ``s0`` (then ``lo`` is meaningless).
    """

    def evaluate(s, sub):
        f, f_tail, slope = curve.mass(s, idx[sub])
        return residual(f, f_tail, sub), slope

    m = idx.size
    lo, hi = s0.copy(), s0.copy()
    r0, _ = evaluate(s0, np.arange(m))
    lo_ok, hi_ok = r0 <= 0, r0 >= 0
    step = np.ones(m)
    for _ in range(_MAX_BRACKET_DOUBLINGS):
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
    found = lo_ok.copy()
    # An end never bracketed from above: the residual stays negative, lo is valid as is.
    lo_ok_only = lo_ok & ~hi_ok
    hi[lo_ok_only] = lo[lo_ok_only]

    x = 0.5 * (lo + hi)
    todo = np.flatnonzero(found & (hi > lo))
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
    return lo, found
