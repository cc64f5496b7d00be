"""TEMPORARY: majority-rule stand-ins for the certificate engine's general API (being
written); removed once hybridcert.certificate provides frontier_grid and Rule."""
from itertools import product

import numpy as np

from hybridcert.certificate.baselines import discrete_threshold
from hybridcert.certificate.frontier import certified_gamma
from hybridcert.certificate.frontier import is_certified as _is_certified
from hybridcert.noise import LikelihoodRatio

MAJORITY = "majority"


def is_certified(p, ratio, *, p_upper=None, rule=MAJORITY):
    return _is_certified(p, ratio, p_upper)


def threshold_probability(ratio, rule=MAJORITY):
    return discrete_threshold(ratio)


def frontier_grid(p, discrete, caps, *, p_upper=None, rule=MAJORITY):
    p = np.atleast_1d(np.asarray(p, float))
    pb = None if p_upper is None else np.broadcast_to(np.atleast_1d(p_upper), p.shape)
    shape = tuple(c + 1 for c in caps)
    cert = np.zeros((p.size,) + shape, dtype=bool)
    gamma = np.full((p.size,) + shape, np.nan)
    for index in product(*[range(n) for n in shape]):
        ratio = LikelihoodRatio.identity()
        for noise, r in zip(discrete, index, strict=True):
            if r:
                ratio = ratio * noise.likelihood_ratio(r)
        ok = _is_certified(p, ratio, pb)
        for axis in range(len(index)):
            if index[axis]:
                prev = list(index)
                prev[axis] -= 1
                ok &= cert[(slice(None),) + tuple(prev)]
        cert[(slice(None),) + index] = ok
        idx = np.flatnonzero(ok)
        if idx.size:
            g = certified_gamma(p[idx], None if pb is None else pb[idx], ratio)
            gamma[(idx,) + index] = g
    return cert, gamma
