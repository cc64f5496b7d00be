"""Sequential certification: stop drawing noisy copies as soon as the answer is settled.

* :mod:`~hybridcert.sequential.question` — :class:`SequentialQuestion` (what a run asks of
  one record; the one place a question is checked) and :func:`certify_sequential`;
* :mod:`~hybridcert.sequential.rules` — the :class:`StoppingRule` protocol and the rules
  (``DecisionTest``, ``BoundedDecision``, ``RadiusTest``);
* :mod:`~hybridcert.sequential.boundaries` — the boundary families by name (mixture, looks,
  spending);
* :mod:`~hybridcert.sequential.bounds` — schedules and elementary bounds;
* :mod:`~hybridcert.sequential.baselines` — baseline rules for the tests and benchmarks;
* :mod:`~hybridcert.sequential.driver` — the one driver that runs stopping rules over shared
  forward batches for ``certify``, the service and the benchmark.

The rules are pure numpy/scipy; the question and the driver (which need the smoothing layer)
are imported on first use, so that :mod:`hybridcert.smoothing` can use the rules' labels and
statuses.
"""

from hybridcert.sequential.boundaries import boundary_names, get_boundary, register
from hybridcert.sequential.rules import (
    ABSTAIN,
    NOT_FLAGGED,
    BoundedDecision,
    DecisionTest,
    RadiusTest,
    StoppingRule,
)

_LAZY = {"SequentialQuestion": "question", "certify_sequential": "question",
         "check_question": "question", "Driver": "driver", "DriverError": "driver",
         "Job": "driver", "JobTimeout": "driver", "Outcome": "driver", "QueueFull": "driver",
         "RuleSet": "driver", "ShuttingDown": "driver"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"hybridcert.sequential.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'hybridcert.sequential' has no attribute {name!r}")


__all__ = ["ABSTAIN", "NOT_FLAGGED", "BoundedDecision", "DecisionTest", "Driver",
           "DriverError", "Job", "JobTimeout", "Outcome", "QueueFull", "RadiusTest", "RuleSet",
           "SequentialQuestion", "ShuttingDown", "StoppingRule", "boundary_names",
           "certify_sequential", "check_question", "get_boundary", "register"]
