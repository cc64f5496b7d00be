"""Sequential certification: the one driver that runs stopping rules over shared forward
batches for ``certify``, the service and the benchmark (:mod:`~hybridcert.sequential.driver`).
"""

from hybridcert.sequential.driver import (
    Driver,
    DriverError,
    Job,
    JobTimeout,
    Outcome,
    QueueFull,
    RuleSet,
    ShuttingDown,
)

__all__ = ["Driver", "DriverError", "Job", "JobTimeout", "Outcome", "QueueFull", "RuleSet",
           "ShuttingDown"]
