"""Certified regions: the largest Gaussian shift per token budget (docs/THEORY.md section 3).

For each budget of substituted tokens (one count per token block), the largest certified
Gaussian shift ``gamma*`` (in standard deviations; ``eps* = sigma * gamma*`` for one
continuous block) is where the rule stops holding.  Every rule is monotone in the shift,
so ``gamma*`` is a root of a monotone function: the fast path solves for it by Newton's
method and proves a value just below it (:mod:`hybridcert.certificate.fast`); the rest is
bisection that reports the certified end.  ``gamma*`` is ``inf`` where the rule holds at
every shift (e.g. ``pA = 1``, or ``pB = 0`` with no ratio-infinity mass).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri

from hybridcert._validation import check_count, check_positive, check_probability
from hybridcert.certificate.bounds import mass_bounds
from hybridcert.certificate.fast import newton_gamma
from hybridcert.certificate.rules import Rule, check_rule
from hybridcert.noise.base import Noise
from hybridcert.noise.ratio import LikelihoodRatio

#: Default cap on the number of substituted tokens a frontier explores.
DEFAULT_MAX_TOKENS = 1000
#: Largest token budget a frontier accepts (a substitution ratio at r costs O(r) memory and
#: O(r) time per step of a frontier; see hybridcert.noise.discrete.MAX_SUBSTITUTION_TOKENS).
MAX_TOKENS = 10_000
_RADIUS_RTOL = 1e-11


@dataclass(frozen=True)
class Frontier:
    """Certified regions of a batch of inputs (one continuous, one token block).

    Attributes
    ----------
    max_tokens : ndarray of int, shape (n,)
        Largest ``r`` certified at radius 0, or -1 when nothing is certified.
    l2_radius : ndarray of float, shape (n, R + 1)
        ``l2_radius[i, r]`` is ``eps*(r)`` in the continuous block's own units, NaN for
        ``r > max_tokens[i]``, ``inf`` where every radius is certified; non-increasing in
        ``r``.
    """

    max_tokens: np.ndarray
    l2_radius: np.ndarray

    def rows(self, i: int) -> list[dict]:
        """Frontier of input ``i`` as ``[{"tokens": r, "l2_radius": eps}, ...]`` (``eps``
        may be ``inf``: JSON writers must map it, e.g. to null)."""
        return [{"tokens": r, "l2_radius": float(self.l2_radius[i, r])}
                for r in range(int(self.max_tokens[i]) + 1)]

    def certifies(self, l2: float, tokens: int) -> np.ndarray:
        """Which inputs are certified against ``l2`` and ``tokens`` at the same time."""
        if tokens >= self.l2_radius.shape[1]:
            return np.zeros(self.max_tokens.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return (self.max_tokens >= tokens) & (self.l2_radius[:, tokens] >= l2)


class Grid(NamedTuple):
    """Certified region of a batch over several token blocks (:func:`frontier_grid`).

    Attributes
    ----------
    certified_at_zero : ndarray of bool, shape (n, cap_1 + 1, ..., cap_k + 1)
        The rule holds with no Gaussian shift at budget ``(r_1, ..., r_k)`` and at every
        smaller budget.
    gamma : ndarray of float, same shape
        Largest certified Gaussian shift in standard deviations (``inf``: every shift),
        NaN where not certified; non-increasing along every axis.
    """

    certified_at_zero: np.ndarray
    gamma: np.ndarray


def _checked(p, p_upper, rule: Rule) -> tuple[np.ndarray, np.ndarray | None]:
    """The bound array (named by what the rule reads) and the runner-up's bound."""
    name = "p_upper" if rule.reads_upper else "p_lower"
    if p is None:
        raise ValueError(f"{name} is required by the {rule.kind} rule")
    p_arr = np.atleast_1d(check_probability(name, p)).astype(float).ravel()
    if p_upper is None:
        return p_arr, None
    if rule.kind != "majority":
        raise ValueError(f"p_upper (the runner-up's bound) belongs to the majority rule; the "
                         f"{rule.kind} rule reads one bound, p")
    p_b = np.atleast_1d(check_probability("p_upper", p_upper)).astype(float).ravel()
    if p_b.size not in (1, p_arr.size):
        raise ValueError(f"p_upper must have one entry or one per input ({p_arr.size}), "
                         f"got {p_b.size}")
    return p_arr, np.ascontiguousarray(np.broadcast_to(p_b, p_arr.shape))


def is_certified(p, ratio: LikelihoodRatio, p_upper=None, gamma=None, *,
                 rule: Rule | None = None) -> np.ndarray:
    """Whether ``rule`` holds under the perturbation ``ratio``.

    Parameters
    ----------
    p : float or array_like of shape (n,)
        The confidence bound the rule reads, in [0, 1]: lower bound on ``pA`` (majority),
        lower bound on ``pc`` (flag), UPPER bound on ``pc`` (benign).
    ratio : LikelihoodRatio
        The perturbation (discrete regions and Gaussian shift).
    p_upper : float or array_like, optional
        Majority rule only: upper bound on every other class; default ``1 - pA``.
    gamma : array_like, optional
        Per-input Gaussian shift (standard deviations) added in L2 to the ratio's own.
    rule : Rule, optional
        Default: majority.

    Returns
    -------
    ndarray of bool, shape (n,)
        Sound: floating-point error never turns a false condition true; exact ties
        (``lower = 1/2``, ``upper = tau``) are not certified.
    """
    rule = check_rule(rule)
    p_arr, p_b = _checked(p, p_upper, rule)
    if gamma is not None:
        gamma = np.broadcast_to(np.asarray(gamma, dtype=float), p_arr.shape)
    return _holds(p_arr, p_b, ratio, rule, gamma)


def _holds(p: np.ndarray, p_b, ratio: LikelihoodRatio, rule: Rule, gamma=None) -> np.ndarray:
    if rule.reads_upper:
        return rule.holds(None, mass_bounds(1.0 - p, p, ratio, gamma)[1])
    low = mass_bounds(p, 1.0 - p, ratio, gamma)[0]
    if p_b is None:
        return rule.holds(low)
    return rule.holds(low, mass_bounds(1.0 - p_b, p_b, ratio, gamma)[1])


def certified_gamma(p, ratio: LikelihoodRatio, *, p_upper=None,
                    rule: Rule | None = None) -> np.ndarray:
    """Largest Gaussian shift (standard deviations, ``gamma = eps / sigma``) at which
    ``rule`` still holds under the discrete change ``ratio``, per input.

    Parameters
    ----------
    p, p_upper, rule
        As in :func:`is_certified`.
    ratio : LikelihoodRatio
        The discrete change alone (its own ``gamma`` must be 0).

    Returns
    -------
    ndarray of float, shape (n,)
        ``gamma*`` rounded towards certification (the rule holds at it); ``inf`` where it
        holds at every shift; NaN where it does not hold even at shift 0.  Two-class
        majority, flag and benign use a Newton solve plus a proof
        (:func:`hybridcert.certificate.fast.newton_gamma`); inputs it cannot prove, and
        majority with ``p_upper``, use bisection.
    """
    rule = check_rule(rule)
    if not isinstance(ratio, LikelihoodRatio):
        raise ValueError(f"ratio must be a LikelihoodRatio, got {ratio!r}")
    if ratio.gamma != 0:
        raise ValueError(f"certified_gamma needs a discrete-only ratio (gamma = 0), got "
                         f"gamma={ratio.gamma!r}")
    p_arr, p_b = _checked(p, p_upper, rule)
    return _certified_gamma(p_arr, p_b, ratio, rule)


def _certified_gamma(p, p_b, ratio: LikelihoodRatio, rule: Rule,
                     at_zero: np.ndarray | None = None, hint=None) -> np.ndarray:
    out = np.full(p.size, np.nan)
    ok = _holds(p, p_b, ratio, rule) if at_zero is None else at_zero
    infinite = ok & _unbounded(p, p_b, ratio, rule)
    out[infinite] = np.inf
    todo = np.flatnonzero(ok & ~infinite)
    if todo.size and p_b is None:
        found, proven = newton_gamma(p[todo], ratio, rule,
                                     None if hint is None else hint[todo])
        out[todo[proven]] = found[proven]
        todo = todo[~proven]
    if todo.size:
        out[todo] = bisect_gamma(p[todo], ratio, p_upper=None if p_b is None else p_b[todo],
                                 rule=rule)
    return out


def _unbounded(p, p_b, ratio: LikelihoodRatio, rule: Rule) -> np.ndarray:
    """Where a rule that holds at shift 0 holds at every shift (exact limits).

    ``lower(p; gamma)`` is constant at ``p = 1`` and tends to 0 otherwise (staying > 0 when
    ``p`` exceeds the ratio-0 mass); ``upper(q; gamma)`` is the ratio-infinity mass at
    ``q = 0`` and tends to 1 otherwise (staying < 1 when ``1 - q`` exceeds the ratio-0
    mass).  With no ratio-infinity mass these constant ends decide alone.
    """
    if rule.kind in ("flag", "benign") or p_b is None:
        return p == (0.0 if rule.reads_upper else 1.0)
    a_full, b_empty = p == 1.0, p_b == 0.0
    no_infinite = ratio.nu_infinite == 0.0
    return (a_full & b_empty) | ((a_full | b_empty) & no_infinite)


def _gaussian_only_gamma(p, p_b, ratio: LikelihoodRatio, rule: Rule) -> np.ndarray:
    """Shift beyond which the rule fails for the Gaussian part alone, or (with
    ratio-infinity mass) for the constant end: token changes only make it fail sooner."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if rule.kind == "flag":
            return ndtri(p) - ndtri(rule.level)
        if rule.kind == "benign":
            return ndtri(rule.level) - ndtri(p)
        if p_b is None:
            return ndtri(p)
        z_a, z_b = ndtri(p), ndtri(p_b)
        nu_inf = ratio.nu_infinite
        both = (z_a - z_b) / 2.0
        # pB = 0: lower(pA) must stay above nu_inf; pA = 1: upper(pB) below 1 - nu_inf.
        b_empty = np.where(np.isfinite(z_a), z_a - ndtri(nu_inf), np.inf)
        a_full = np.where(np.isfinite(z_b), ndtri(1.0 - nu_inf) - z_b, np.inf)
        return np.where(p_b == 0.0, b_empty, np.where(p == 1.0, a_full, both))


def bisect_gamma(p, ratio: LikelihoodRatio, *, p_upper=None,
                 rule: Rule | None = None) -> np.ndarray:
    """Bisection on the shift between 0 (certified) and the Gaussian-only shift (not
    certified: token changes only weaken the bound); returns the certified end.  Every
    input must be certified at shift 0 with a finite certified shift."""
    rule = check_rule(rule)
    p = np.atleast_1d(np.asarray(p, dtype=float))
    p_b = None if p_upper is None else np.atleast_1d(np.asarray(p_upper, dtype=float))
    hi = _gaussian_only_gamma(p, p_b, ratio, rule)
    hi = np.nextafter(np.where(np.isfinite(hi), np.maximum(hi, 0.0), 0.0) * (1 + 1e-9),
                      np.inf)
    lo = np.zeros_like(hi)
    todo = np.flatnonzero(hi > lo)
    for _ in range(400):
        if todo.size == 0:
            break
        mid = 0.5 * (lo[todo] + hi[todo])
        ok = _holds(p[todo], None if p_b is None else p_b[todo], ratio, rule, gamma=mid)
        lo[todo[ok]] = mid[ok]
        hi[todo[~ok]] = mid[~ok]
        todo = todo[hi[todo] - lo[todo] > _RADIUS_RTOL * hi[todo]]
    return lo


def frontier_grid(p, discrete: Sequence[Noise], caps: Sequence[int], *, p_upper=None,
                  rule: Rule | None = None) -> Grid:
    """Certified region over several independent token blocks, vectorised over inputs.

    Parameters
    ----------
    p, p_upper, rule
        As in :func:`is_certified` (``p`` of shape (n,)).
    discrete : sequence of Noise
        One discrete noise per token block (its own budget ``r_j``); the joint ratio at
        ``(r_1, ..., r_k)`` is the product of ``noise_j.likelihood_ratio(r_j)``.
    caps : sequence of int
        Largest budget explored per block (at most :data:`MAX_TOKENS` each).

    Returns
    -------
    Grid
        ``(certified_at_zero, gamma)``, each of shape ``(n, cap_1 + 1, ..., cap_k + 1)``;
        ``(n,)`` with no token block.  A budget is certified only if every smaller budget
        is, and ``gamma`` is the running minimum over smaller budgets (both sound: the
        threat "at most r_j changes" covers them).  Budgets beyond one where no input is
        certified are not explored.
    """
    rule = check_rule(rule)
    p_arr, p_b = _checked(p, p_upper, rule)
    discrete = list(discrete)
    caps = [_check_cap(f"caps[{j}]", c) for j, c in enumerate(caps)]
    if len(discrete) != len(caps):
        raise ValueError(f"caps needs one entry per token block ({len(discrete)}), got "
                         f"{len(caps)}")
    for j, noise in enumerate(discrete):
        if not isinstance(noise, Noise) or noise.kind != "discrete":
            raise ValueError(f"discrete[{j}] must be a discrete Noise (Substitution or Mask), "
                             f"got {noise!r}")
    shape = tuple(c + 1 for c in caps)
    cells = _explore(p_arr, p_b, rule, discrete, shape)
    certified = np.zeros((p_arr.size,) + shape, dtype=bool)
    gamma = np.full((p_arr.size,) + shape, np.nan)
    for index, (ok, g) in cells.items():
        certified[(slice(None),) + index] = ok
        gamma[(slice(None),) + index] = g
    return Grid(certified, gamma)


def _check_cap(name: str, value) -> int:
    cap = check_count(name, value)
    if cap > MAX_TOKENS:
        raise ValueError(f"{name} must be an integer <= {MAX_TOKENS}, got {cap}")
    return cap


def _explore(p, p_b, rule: Rule, discrete: list, shape: tuple) -> dict:
    """``{budget: (certified, gamma)}`` over the explored budgets, in lexicographic order
    (every smaller budget first).  Running minimum and down-closure applied."""
    n = p.size
    cells: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    ratios: list[dict[int, LikelihoodRatio]] = [{} for _ in discrete]
    for index in itertools.product(*[range(m) for m in shape]):
        alive = np.ones(n, dtype=bool)
        floor = np.full(n, np.inf)
        dead = False
        for axis, r in enumerate(index):
            if r == 0:
                continue
            prev = index[:axis] + (r - 1,) + index[axis + 1:]
            if prev not in cells:
                dead = True
                break
            ok_prev, g_prev = cells[prev]
            alive &= ok_prev
            floor = np.fmin(floor, g_prev)
        if dead or not alive.any():
            continue
        ratio = LikelihoodRatio.identity()
        for axis, r in enumerate(index):
            if r:
                block = ratios[axis]
                if r not in block:
                    block[r] = discrete[axis].likelihood_ratio(r)
                ratio = ratio * block[r]
        idx = np.flatnonzero(alive)
        sub_b = None if p_b is None else p_b[idx]
        ok_sub = _holds(p[idx], sub_b, ratio, rule)
        ok = np.zeros(n, dtype=bool)
        ok[idx] = ok_sub
        if not ok.any():
            continue
        g = np.full(n, np.nan)
        g[idx] = _certified_gamma(p[idx], sub_b, ratio, rule, at_zero=ok_sub,
                                  hint=floor[idx])
        g = np.where(ok, np.fmin(g, floor), np.nan)
        cells[index] = (ok, g)
    return cells


def certified_frontier(
    p,
    *,
    sigma: float | None,
    discrete: Noise | None,
    p_upper=None,
    max_tokens: int | None = None,
    rule: Rule | None = None,
) -> Frontier:
    """Certified frontier ``eps*(r)`` for ``r = 0 .. r_max`` of each input.

    Parameters
    ----------
    p : float or array_like of shape (n,)
        The confidence bound the rule reads, in [0, 1]: lower bound on ``pA`` (majority,
        the default), on the flagged class (flag), or UPPER bound on it (benign).
    sigma : float or None
        Gaussian noise level of the continuous block (for several blocks under one shared
        L2 budget, the smallest sigma).  None: no continuous block; radii are 0.
    discrete : Substitution or Mask or None
        Noise of the discrete block.  None: only ``r = 0`` is explored.
    p_upper : float or array_like, optional
        Majority rule: upper confidence bound on the runner-up ``pB``.  Default:
        ``1 - pA`` (two classes).
    max_tokens : int, optional
        Largest ``r`` to explore (default 1000, at most :data:`MAX_TOKENS`).
    rule : Rule, optional
        What must hold (default: majority); ``Rule.flag(tau)``, ``Rule.benign(tau)`` for
        thresholded detectors.

    Returns
    -------
    Frontier
        Radii are in ``sigma``'s units; ``inf`` where every radius is certified.
    """
    rule = check_rule(rule)
    p_arr, p_b = _checked(p, p_upper, rule)
    if sigma is not None:
        sigma = check_positive("sigma", sigma)
    cap = DEFAULT_MAX_TOKENS if max_tokens is None else _check_cap("max_tokens", max_tokens)
    blocks, shape = ([discrete], (cap + 1,)) if discrete is not None else ([], ())
    cells = _explore(p_arr, p_b, rule, blocks, shape)
    explored = max([index[0] if index else 0 for index in cells] + [0]) + 1
    certified = np.zeros((p_arr.size, explored), dtype=bool)
    gamma = np.full((p_arr.size, explored), np.nan)
    for index, (ok, g) in cells.items():
        column = index[0] if index else 0
        certified[:, column] = ok
        gamma[:, column] = g
    r_max = certified.sum(axis=1) - 1
    if sigma is None:
        radius = np.where(certified, 0.0, np.nan)
    else:
        # Rounded down by a few ulps so that eps / sigma never exceeds the certified gamma.
        radius = sigma * gamma * (1.0 - 4.0 * np.finfo(float).eps)
    return Frontier(r_max.astype(int), radius)
