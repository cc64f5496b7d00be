"""Monte Carlo smoothing: wrap any base classifier, predict and certify with a guarantee."""

from hybridcert.blocks import TokenBlock, Vocabulary
from hybridcert.blocks.hybrid import Record
from hybridcert.sequential.rules import ABSTAIN, NOT_FLAGGED
from hybridcert.smoothing.base import BaseClassifier, ModelOutputError
from hybridcert.smoothing.core import (
    Detector,
    SmoothedClassifier,
    Stage,
    check_can_certify,
    lower_confidence_bound,
    max_certifiable_radius,
    upper_confidence_bound,
)
from hybridcert.smoothing.export import certification_rows, write_json, write_tsv
from hybridcert.smoothing.results import Certification, Prediction, result_row

__all__ = ["ABSTAIN", "NOT_FLAGGED", "BaseClassifier", "Certification", "Detector",
           "ModelOutputError", "Prediction", "Record", "SmoothedClassifier", "Stage",
           "TokenBlock", "Vocabulary", "certification_rows", "check_can_certify",
           "lower_confidence_bound", "max_certifiable_radius", "result_row",
           "upper_confidence_bound", "write_json", "write_tsv"]
