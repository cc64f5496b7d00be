"""Certified moderation over HTTP (``hybridcert serve``; docs/SERVICE.md).

The batching engine (:mod:`~hybridcert.serve.engine`) and the decision rules
(:mod:`~hybridcert.serve.rules`) need only the core package; the web layer
(:mod:`~hybridcert.serve.app`, :mod:`~hybridcert.serve.service`) needs the ``serve`` extra.
"""

from hybridcert.serve.engine import BatchingEngine, JobTimeout, Outcome, QueueFull, ShuttingDown
from hybridcert.serve.rules import DecisionRules, Reading

__all__ = ["BatchingEngine", "DecisionRules", "JobTimeout", "Outcome", "QueueFull", "Reading",
           "ShuttingDown"]
