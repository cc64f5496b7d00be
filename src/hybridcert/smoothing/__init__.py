"""Monte Carlo smoothing: wrap any base classifier, predict and certify with a guarantee."""

from hybridcert.smoothing.base import BaseClassifier
from hybridcert.smoothing.core import (
    ABSTAIN,
    Certification,
    Prediction,
    SmoothedClassifier,
    check_can_certify,
    lower_confidence_bound,
    max_certifiable_radius,
    upper_confidence_bound,
)
from hybridcert.smoothing.export import certification_rows, write_json, write_tsv
from hybridcert.smoothing.inputs import Record, TokenBlock, Vocabulary

__all__ = ["ABSTAIN", "BaseClassifier", "Certification", "Prediction", "Record",
           "SmoothedClassifier", "TokenBlock", "Vocabulary", "certification_rows",
           "check_can_certify", "lower_confidence_bound", "max_certifiable_radius",
           "upper_confidence_bound", "write_json", "write_tsv"]
