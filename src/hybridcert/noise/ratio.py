"""The likelihood ratio of a smoothing distribution under a perturbation.

Every noise type describes, for a perturbation of a given size, the distribution of the
likelihood ratio ``Lambda = d nu / d mu`` between the noise around the perturbed input
(``nu``) and around the clean input (``mu``).  Because hybrid noise is drawn independently
per block, ``Lambda`` factorises into

* a *Gaussian part* ``exp(gamma t - gamma^2 / 2)`` with ``t ~ N(0, 1)`` under ``mu`` and
  ``N(gamma, 1)`` under ``nu`` (THEORY.md section 2), and
* a *discrete part* taking finitely many values ``rho_k`` with masses ``mu_k`` and ``nu_k``,
  plus two atoms: ratio 0 (``nu`` puts no mass there) and ratio infinity (``mu`` puts none).

:class:`LikelihoodRatio` holds both and multiplies for independent blocks; the certificate
code needs nothing else from a noise type.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import logsumexp

# Regions whose nu-mass is below this are moved into the ratio-0 atom.  That lowers nu
# pointwise, so every lower bound computed afterwards is still valid (and smaller by at
# most the moved mass); it keeps the region count small for large vocabularies.
NEGLIGIBLE_NU = 1e-30
# Log-ratios closer than this (relative) are the same value up to float rounding.
_MERGE_RTOL = 1e-13
_EPS = float(np.finfo(float).eps)


@dataclass(frozen=True, eq=False)
class LikelihoodRatio:
    """Distribution of the likelihood ratio ``d nu / d mu`` of one or more noise blocks.

    Attributes
    ----------
    log_ratio : ndarray of shape (K,)
        Finite log likelihood ratios of the discrete regions, strictly increasing.
    mu, nu : ndarray of shape (K,)
        Mass of each region under the clean (``mu``) and perturbed (``nu``) noise.
    mu_zero : float
        ``mu`` mass of the ratio-0 atom (points the perturbed noise never reaches).
    nu_infinite : float
        ``nu`` mass of the ratio-infinity atom (points the clean noise never reaches).
    gamma : float
        Gaussian shift in standard deviations, ``sqrt(sum_j (eps_j / sigma_j)^2)``.
    mass_rtol : float
        Bound on the relative floating-point error of every stored mass (and of the
        ratio ``nu_k / mu_k`` against ``exp(log_ratio[k])``); the certificate widens its
        safety margin by it.  0 for masses that are exact (the identity).
    nu_dropped : float
        ``nu`` mass moved into the ratio-0 atom because each region carrying it had
        ``nu < NEGLIGIBLE_NU``.  Lower bounds only get smaller by the move; upper bounds
        add it back.
    """

    log_ratio: np.ndarray
    mu: np.ndarray
    nu: np.ndarray
    mu_zero: float = 0.0
    nu_infinite: float = 0.0
    gamma: float = 0.0
    mass_rtol: float = 0.0
    nu_dropped: float = 0.0

    @classmethod
    def identity(cls, gamma: float = 0.0) -> LikelihoodRatio:
        """No discrete change: one region of ratio 1, and a Gaussian shift ``gamma``."""
        one = np.ones(1)
        return cls(np.zeros(1), one, one.copy(), 0.0, 0.0, float(gamma))

    @classmethod
    def from_log_masses(
        cls,
        log_ratio: np.ndarray,
        log_mu: np.ndarray,
        log_nu: np.ndarray,
        gamma: float = 0.0,
        mass_rtol: float = 0.0,
        nu_dropped: float = 0.0,
    ) -> LikelihoodRatio:
        """Build from per-outcome log masses (``-inf`` for zero), merging equal ratios.

        Outcomes with ``log_ratio = -inf`` form the ratio-0 atom, ``+inf`` the
        ratio-infinity atom; outcomes with no mass under either measure are dropped.
        ``mass_rtol`` bounds the relative error the caller's log masses already carry; the
        rounding of ``exp`` and of the merging is added to it here.  Regions whose ``nu``
        mass is below :data:`NEGLIGIBLE_NU` join the ratio-0 atom (``nu_dropped`` records
        their ``nu``); a region whose ``mu`` underflows to 0 stays, with ``mu = 0``.
        """
        log_ratio = np.asarray(log_ratio, dtype=float).ravel()
        log_mu = np.asarray(log_mu, dtype=float).ravel()
        log_nu = np.asarray(log_nu, dtype=float).ravel()
        zero = (log_ratio == -np.inf) | (log_nu == -np.inf)
        infinite = ~zero & ((log_ratio == np.inf) | (log_mu == -np.inf))
        mu_zero = float(np.exp(logsumexp(log_mu[zero]))) if zero.any() else 0.0
        finite = ~zero & ~infinite
        lr, lmu, lnu = log_ratio[finite], log_mu[finite], log_nu[finite]
        order = np.argsort(lr, kind="stable")
        lr, lmu, lnu = lr[order], lmu[order], lnu[order]
        spread = 0.0
        if lr.size:
            gap = np.diff(lr) > _MERGE_RTOL * np.maximum(1.0, np.abs(lr[1:]))
            starts = np.flatnonzero(np.concatenate([[True], gap]))
            ends = np.append(starts[1:], lr.size) - 1
            # A merged group's nu/mu differs from exp(its first log-ratio) by its spread.
            spread = float(np.max(lr[ends] - lr[starts]))
            lmu, lnu = _group_logsumexp(lmu, starts), _group_logsumexp(lnu, starts)
            lr = lr[starts]
        mu, nu = np.exp(lmu), np.exp(lnu)
        nu_inf = float(np.exp(logsumexp(log_nu[infinite]))) if infinite.any() else 0.0
        negligible = nu < NEGLIGIBLE_NU
        mu_zero += float(mu[negligible].sum())
        nu_dropped = float(nu_dropped + nu[negligible].sum())
        keep = ~negligible
        # exp of a log carrying one ulp of error, and (merged groups) a sum of positive terms.
        # A kept region whose mu underflows (mu = 0, true mass below 1e-308) stays a region:
        # the bound treats its mu as 0, an error the margin covers (below 1e-307 per region).
        with np.errstate(divide="ignore"):
            logs = np.abs(np.concatenate([lmu[keep & (mu > 0)], lnu[keep],
                                          np.log([mu_zero, nu_inf])]))
        biggest_log = float(np.max(logs[np.isfinite(logs)], initial=0.0))
        rtol = float(mass_rtol) + 4.0 * _EPS * (2.0 + biggest_log) + 2.0 * spread
        return cls(lr[keep], mu[keep], nu[keep], min(mu_zero, 1.0), min(nu_inf, 1.0),
                   float(gamma), rtol, nu_dropped)

    @property
    def n_regions(self) -> int:
        return int(self.log_ratio.size)

    @property
    def is_identity(self) -> bool:
        """True when the perturbation changes nothing (ratio 1 everywhere, gamma 0)."""
        return (
            self.gamma == 0.0
            and self.n_regions == 1
            and self.log_ratio[0] == 0.0
            and self.mu_zero == 0.0
            and self.nu_infinite == 0.0
        )

    def __mul__(self, other: LikelihoodRatio) -> LikelihoodRatio:
        """Ratio of two independent blocks: regions multiply, Gaussian shifts add in L2."""
        if not isinstance(other, LikelihoodRatio):
            return NotImplemented
        gamma = float(np.hypot(self.gamma, other.gamma))
        if other._is_unit():
            return replace(self, gamma=gamma)
        if self._is_unit():
            return replace(other, gamma=gamma)
        a, b = self._outcomes(), other._outcomes()
        with np.errstate(invalid="ignore"):
            lr = a[0][:, None] + b[0][None, :]
        # 0 * infinity: an outcome with no mass under either measure.
        lr = np.where(np.isnan(lr), -np.inf, lr)
        # The true nu is at most the stored one plus each factor's dropped mass.
        return LikelihoodRatio.from_log_masses(
            lr, a[1][:, None] + b[1][None, :], a[2][:, None] + b[2][None, :], gamma,
            mass_rtol=self.mass_rtol + other.mass_rtol + 4.0 * _EPS,
            nu_dropped=self.nu_dropped + other.nu_dropped,
        )

    def _is_unit(self) -> bool:
        """One region of ratio 1 and no atoms (the Gaussian shift aside)."""
        return (self.n_regions == 1 and self.log_ratio[0] == 0.0 and self.mu_zero == 0.0
                and self.nu_infinite == 0.0 and self.mu[0] == 1.0 and self.nu[0] == 1.0)

    def _outcomes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All regions including the two atoms, as (log_ratio, log_mu, log_nu)."""
        with np.errstate(divide="ignore"):
            lr = np.concatenate([[-np.inf], self.log_ratio, [np.inf]])
            lmu = np.log(np.concatenate([[self.mu_zero], self.mu, [0.0]]))
            lnu = np.log(np.concatenate([[0.0], self.nu, [self.nu_infinite]]))
        return lr, lmu, lnu


def _group_logsumexp(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """log(sum(exp(values))) over the contiguous groups beginning at ``starts``."""
    peak = np.maximum.reduceat(values, starts)
    safe_peak = np.where(np.isfinite(peak), peak, 0.0)
    counts = np.diff(np.append(starts, values.size))
    with np.errstate(divide="ignore"):
        total = np.add.reduceat(np.exp(values - np.repeat(safe_peak, counts)), starts)
        return np.where(np.isfinite(peak), safe_peak + np.log(total), peak)


def product(ratios: list[LikelihoodRatio]) -> LikelihoodRatio:
    """Joint likelihood ratio of independent blocks."""
    result = LikelihoodRatio.identity()
    for ratio in ratios:
        result = result * ratio
    return result
