"""Independent worst-case computations for tiny instances, by enumeration.

Nothing here uses the library's regions: the discrete outcomes of ``r`` changed positions
are enumerated one by one, and the Gaussian part is a fine grid of cells in
``t = <z - x, delta> / (sigma ||delta||)``.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog
from scipy.stats import norm

MASK = "mask"
# HiGHS' default feasibility tolerance (1e-7) lets mu.f exceed q by that much, which
# moves the optimum by kappa * 1e-7: tighten it so the LP is a true reference.
LP_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def discrete_outcomes(noise: str, keep: float, vocab: int, r: int):
    """(mu, nu) of every joint outcome of the r changed positions (old 0 -> new 1)."""
    values = list(range(vocab)) + ([MASK] if noise == MASK else [])

    def prob(z, x):
        if noise == MASK:
            return keep if z == x else (1 - keep if z == MASK else 0.0)
        return keep if z == x else (1 - keep) / (vocab - 1)

    mu, nu = [], []
    for z in itertools.product(values, repeat=r):
        mu.append(np.prod([prob(zi, 0) for zi in z]))
        nu.append(np.prod([prob(zi, 1) for zi in z]))
    return np.array(mu), np.array(nu)


def gaussian_cells(gamma: float, cells: int = 1500, span: float = 9.0):
    """(mu, nu) masses of a fine partition of the real line in t."""
    if gamma == 0:
        return np.ones(1), np.ones(1)
    edges = np.concatenate([[-np.inf], np.linspace(-span, span + gamma, cells), [np.inf]])
    mu = np.diff(norm.cdf(edges))
    nu = np.diff(norm.cdf(edges - gamma))
    return mu, nu


def joint_outcomes(noise, keep, vocab, r, gamma, cells=1500):
    dmu, dnu = discrete_outcomes(noise, keep, vocab, r)
    gmu, gnu = gaussian_cells(gamma, cells)
    return np.outer(dmu, gmu).ravel(), np.outer(dnu, gnu).ravel()


def lp_lower_bound(p: float, mu: np.ndarray, nu: np.ndarray) -> float:
    """min nu.f subject to mu.f >= p, 0 <= f <= 1 (scipy's HiGHS LP solver)."""
    n = mu.size  # HiGHS' tolerances are absolute: scale coefficients to order one
    result = linprog(nu * n, A_ub=-mu[None, :] * n, b_ub=[-p * n], bounds=(0, 1),
                     method="highs-ds", options=LP_OPTIONS)
    assert result.status == 0, result.message
    return float(result.fun) / n


def lp_upper_bound(q: float, mu: np.ndarray, nu: np.ndarray) -> float:
    """max nu.f subject to mu.f <= q, 0 <= f <= 1."""
    n = mu.size
    result = linprog(-nu * n, A_ub=mu[None, :] * n, b_ub=[q * n], bounds=(0, 1),
                     method="highs-ds", options=LP_OPTIONS)
    assert result.status == 0, result.message
    return float(-result.fun) / n


def neyman_pearson_set_masses(p: float, mu: np.ndarray, nu: np.ndarray):
    """mu and nu masses of {ratio <= kappa} (fraction of the boundary) with mu-mass p."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mu > 0, nu / mu, np.inf)
    order = np.argsort(ratio, kind="stable")
    taken_mu, taken_nu = 0.0, 0.0
    for i in order:
        if taken_mu + mu[i] >= p:
            frac = (p - taken_mu) / mu[i] if mu[i] > 0 else 0.0
            return taken_mu + frac * mu[i], taken_nu + frac * nu[i]
        taken_mu += mu[i]
        taken_nu += nu[i]
    return taken_mu, taken_nu


def joint_block_outcomes(blocks, gamma: float, cells: int = 300):
    """(mu, nu) of every joint outcome of several independent token blocks times a grid
    of Gaussian cells.  ``blocks`` is a list of ``(noise, keep, vocab, r)``."""
    mu, nu = np.ones(1), np.ones(1)
    for noise, keep, vocab, r in blocks:
        dmu, dnu = discrete_outcomes(noise, keep, vocab, r)
        mu, nu = np.outer(mu, dmu).ravel(), np.outer(nu, dnu).ravel()
    gmu, gnu = gaussian_cells(gamma, cells)
    return np.outer(mu, gmu).ravel(), np.outer(nu, gnu).ravel()


def _greedy(mass: float, mu: np.ndarray, nu: np.ndarray, descending: bool) -> float:
    """nu of the outcomes taken by increasing (or decreasing) nu/mu until their mu reaches
    ``mass``, the last one fractionally.  Outcomes with mu = 0 (ratio infinity) are never
    taken by increasing ratio and always taken first by decreasing ratio."""
    free = mu == 0
    base = float(nu[free].sum()) if descending else 0.0
    mu, nu = mu[~free], nu[~free]
    ratio = nu / mu
    order = np.argsort(-ratio if descending else ratio, kind="stable")
    cum_mu, cum_nu = np.cumsum(mu[order]), np.cumsum(nu[order])
    j = int(np.searchsorted(cum_mu, mass, side="left"))
    if j >= order.size:
        return base + float(cum_nu[-1])
    before_mu = cum_mu[j - 1] if j else 0.0
    before_nu = cum_nu[j - 1] if j else 0.0
    frac = min(max((mass - before_mu) / mu[order[j]], 0.0), 1.0)
    return base + float(before_nu + frac * nu[order[j]])


def greedy_lower_bound(p: float, mu: np.ndarray, nu: np.ndarray) -> float:
    """Optimum of :func:`lp_lower_bound` solved exactly: with one constraint the LP is a
    fractional knapsack, filled by increasing nu/mu (``test_greedy_equals_the_linear_
    program`` pins the equality)."""
    return _greedy(p, mu, nu, descending=False)


def greedy_upper_bound(q: float, mu: np.ndarray, nu: np.ndarray) -> float:
    """Optimum of :func:`lp_upper_bound`: outcomes by decreasing nu/mu (mu = 0 first)."""
    return _greedy(q, mu, nu, descending=True)
