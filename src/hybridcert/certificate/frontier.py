"""The certified region of an input: the frontier ``eps*(r)`` (THEORY.md section 3).

For each number ``r`` of substituted tokens, ``eps*(r)`` is the largest L2 radius at which
``lower(pA) > upper(pB)`` still holds (two classes: ``lower(pA) > 1/2``).  The condition is
monotone in the radius, so the root is bracketed and the certified end is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from hybridcert._validation import check_count, check_positive, check_probability
from hybridcert.certificate.bounds import _lower_bound, _upper_bound
from hybridcert.certificate.fast import newton_gamma
from hybridcert.noise.base import Noise
from hybridcert.noise.ratio import LikelihoodRatio

#: Default cap on the number of substituted tokens a frontier explores.
DEFAULT_MAX_TOKENS = 1000
_RADIUS_RTOL = 1e-11


@dataclass(frozen=True)
class Frontier:
    """Certified regions of a batch of inputs.

    Attributes
    ----------
    max_tokens : ndarray of int, shape (n,)
        Largest ``r`` certified at radius 0, or -1 when nothing is certified.
    l2_radius : ndarray of float, shape (n, R + 1)
        ``l2_radius[i, r]`` is ``eps*(r)`` in the continuous block's own units, NaN for
        ``r > max_tokens[i]``; non-increasing in ``r``.
    """

    max_tokens: np.ndarray
    l2_radius: np.ndarray

    def rows(self, i: int) -> list[dict]:
        """Frontier of input ``i`` as ``[{"tokens": r, "l2_radius": eps}, ...]``."""
        return [{"tokens": r, "l2_radius": float(self.l2_radius[i, r])}
                for r in range(int(self.max_tokens[i]) + 1)]

    def certifies(self, l2: float, tokens: int) -> np.ndarray:
        """Which inputs are certified against ``l2`` and ``tokens`` at the same time."""
        if tokens >= self.l2_radius.shape[1]:
            return np.zeros(self.max_tokens.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return (self.max_tokens >= tokens) & (self.l2_radius[:, tokens] >= l2)


def is_certified(p_lower, ratio: LikelihoodRatio, p_upper=None, gamma=None) -> np.ndarray:
    """``lower(pA) > upper(pB)``, with ``pB = 1 - pA`` when ``p_upper`` is None.

    ``gamma`` optionally adds a per-input Gaussian shift to the ratio's own.
    """
    p_a = np.atleast_1d(np.asarray(p_lower, dtype=float))
    low = _lower_bound(p_a, ratio, gamma)
    if p_upper is None:
        return low > 0.5
    p_b = np.broadcast_to(np.asarray(p_upper, dtype=float), p_a.shape)
    return low > _upper_bound(np.ascontiguousarray(p_b), ratio, gamma)


def certified_frontier(
    p_lower,
    *,
    sigma: float | None,
    discrete: Noise | None,
    p_upper=None,
    max_tokens: int | None = None,
) -> Frontier:
    """Certified frontier ``eps*(r)`` for ``r = 0 .. r_max`` of each input.

    Parameters
    ----------
    p_lower : float or array_like of shape (n,)
        Lower confidence bound on the top-class probability ``pA``, in [0, 1].
    sigma : float or None
        Gaussian noise level of the continuous block (for several blocks under one shared
        L2 budget, the smallest sigma).  None: no continuous block; radii are 0.
    discrete : Substitution or Mask or None
        Noise of the discrete block.  None: only ``r = 0`` is explored.
    p_upper : float or array_like, optional
        Upper confidence bound on the runner-up ``pB``.  Default: ``1 - pA`` (two classes).
    max_tokens : int, optional
        Largest ``r`` to explore (default 1000).

    Returns
    -------
    Frontier
    """
    p_a = np.atleast_1d(check_probability("p_lower", p_lower)).astype(float)
    p_b = None
    if p_upper is not None:
        p_b = np.broadcast_to(np.atleast_1d(check_probability("p_upper", p_upper)),
                              p_a.shape).astype(float)
    if sigma is not None:
        sigma = check_positive("sigma", sigma)
    cap = DEFAULT_MAX_TOKENS if max_tokens is None else check_count("max_tokens", max_tokens)
    if discrete is None:
        cap = 0

    certified_at_zero = []
    for r in range(cap + 1):
        ratio = _discrete_ratio(discrete, r)
        ok = is_certified(p_a, ratio, p_b)
        if r > 0:
            ok &= certified_at_zero[-1]
        certified_at_zero.append(ok)
        if not ok.any():
            break
    certified = np.stack(certified_at_zero, axis=1)
    r_max = certified.sum(axis=1) - 1
    radius = np.full((p_a.size, certified.shape[1]), np.nan)
    for r in range(certified.shape[1]):
        idx = np.flatnonzero(certified[:, r])
        if idx.size == 0:
            continue
        if sigma is None:
            radius[idx, r] = 0.0
            continue
        gammas = certified_gamma(p_a[idx], None if p_b is None else p_b[idx],
                                 _discrete_ratio(discrete, r))
        radius[idx, r] = sigma * gammas
    # eps*(r) is non-increasing in r; taking the running minimum keeps every value sound.
    radius = np.fmin.accumulate(radius, axis=1)
    radius[~certified] = np.nan
    return Frontier(r_max.astype(int), radius)


def certified_gamma(p_a: np.ndarray, p_b: np.ndarray | None, ratio: LikelihoodRatio) -> np.ndarray:
    """Largest Gaussian shift (in standard deviations) still certified, per input.

    Every input must be certified at shift 0.  Two classes: a Newton solve of the joint
    system (mass p, bound 1/2) followed by a proof that a point just inside is certified
    (:func:`hybridcert.certificate.fast.newton_gamma`); inputs where that fails, and all
    multi-class inputs, use the bisection below.
    """
    gamma = np.zeros(p_a.size)
    todo = np.arange(p_a.size)
    if p_b is None:
        found, proven = newton_gamma(p_a, ratio)
        gamma[proven] = found[proven]
        todo = np.flatnonzero(~proven)
    if todo.size:
        gamma[todo] = bisect_gamma(p_a[todo], None if p_b is None else p_b[todo], ratio)
    return gamma


def bisect_gamma(p_a: np.ndarray, p_b: np.ndarray | None, ratio: LikelihoodRatio) -> np.ndarray:
    """Bisection on the shift between 0 (certified) and the Gaussian-only radius (not
    certified: token changes only lower the bound); returns the certified end."""
    z_b = -ndtri(p_a) if p_b is None else ndtri(p_b)
    hi = (ndtri(p_a) - z_b) / 2.0
    hi = np.nextafter(hi * (1 + 1e-9), np.inf)
    lo = np.zeros_like(hi)
    todo = np.flatnonzero(hi > lo)
    for _ in range(400):
        if todo.size == 0:
            break
        mid = 0.5 * (lo[todo] + hi[todo])
        ok = is_certified(p_a[todo], ratio, None if p_b is None else p_b[todo], gamma=mid)
        lo[todo[ok]] = mid[ok]
        hi[todo[~ok]] = mid[~ok]
        todo = todo[hi[todo] - lo[todo] > _RADIUS_RTOL * hi[todo]]
    return lo


def _discrete_ratio(discrete: Noise | None, r: int) -> LikelihoodRatio:
    if discrete is None or r == 0:
        return LikelihoodRatio.identity()
    return discrete.likelihood_ratio(r)
