"""Baselines reported beside the joint certificate (THEORY.md section 3).

* :func:`sequential_bound` — valid but looser: bound one modality's change, then feed the
  result into the other's bound; the better of the two orders.
* :func:`per_modality_check` — **unsound**: certifies each modality separately against the
  unperturbed ``p``.  Kept only so that reports can count how often it over-claims.
"""

from __future__ import annotations

import numpy as np

from hybridcert._validation import check_probability
from hybridcert.certificate.bounds import lower_bounds
from hybridcert.noise.ratio import LikelihoodRatio


def sequential_bound(p, continuous: LikelihoodRatio, discrete: LikelihoodRatio):
    """Sequential-composition lower bound, the better of both orders.

    Parameters
    ----------
    p : float or array_like
        Lower bound on the top-class probability, in [0, 1].
    continuous : LikelihoodRatio
        Ratio of the continuous change alone (e.g. ``Gaussian(s).likelihood_ratio(eps)``).
    discrete : LikelihoodRatio
        Ratio of the discrete change alone (e.g. ``Substitution(a, V).likelihood_ratio(r)``).
    """
    p_arr = check_probability("p", p)
    flat = p_arr.ravel()
    discrete_first = lower_bounds(lower_bounds(flat, discrete), continuous)
    gaussian_first = lower_bounds(lower_bounds(flat, continuous), discrete)
    out = np.maximum(discrete_first, gaussian_first).reshape(p_arr.shape)
    return float(out) if out.ndim == 0 else out


def per_modality_check(p, continuous: LikelihoodRatio, discrete: LikelihoodRatio):
    """UNSOUND two-class check: each modality's change alone keeps ``lower > 1/2``.

    Returns True where the per-modality reasoning would declare the input robust.  The
    joint certificate can still fail there (THEORY.md gives p = 0.9, V = 30522,
    a - beta = 0.1, sigma = 0.5, eps = 0.6, r = 1: 0.80 and 0.53 separately, 0.4575 jointly).
    """
    p_arr = check_probability("p", p)
    flat = p_arr.ravel()
    ok = (lower_bounds(flat, continuous) > 0.5) & (lower_bounds(flat, discrete) > 0.5)
    ok = ok.reshape(p_arr.shape)
    return bool(ok) if ok.ndim == 0 else ok


def sequential_radius(p, sigma: float, discrete: LikelihoodRatio):
    """L2 radius certified by sequential composition (better of both orders), closed form.

    Discrete first: ``Phi(Phi^-1(lower_d(p)) - gamma) > 1/2`` iff ``gamma <
    Phi^-1(lower_d(p))``.  Gaussian first: ``lower_d(Phi(Phi^-1(p) - gamma)) > 1/2`` iff
    ``gamma < Phi^-1(p) - Phi^-1(p*)`` with ``p*`` the discrete-only threshold.  Returns 0
    where neither order certifies even at radius 0.
    """
    from scipy.special import ndtri

    p_arr = check_probability("p", p)
    flat = p_arr.ravel()
    discrete_first = ndtri(np.clip(lower_bounds(flat, discrete), 0.5, 1.0))
    gaussian_first = ndtri(flat) - ndtri(discrete_threshold(discrete))
    gamma = np.maximum(np.maximum(discrete_first, gaussian_first), 0.0)
    gamma = np.where(np.isfinite(gamma), gamma, 0.0)
    out = (sigma * np.nextafter(gamma, 0.0) * (gamma > 0)).reshape(p_arr.shape)
    return float(out) if out.ndim == 0 else out


def discrete_threshold(ratio: LikelihoodRatio) -> float:
    """Smallest pA whose two-class bound under ``ratio`` exceeds 1/2 (the certified end, to
    the double); ``inf`` when no pA certifies.  Same as
    ``threshold_probability(ratio, Rule.majority())``."""
    from hybridcert.certificate.thresholds import threshold_probability

    return threshold_probability(ratio)
