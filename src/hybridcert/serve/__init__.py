"""Certified moderation over HTTP (``hybridcert serve``; docs/SERVICE.md).

The decision rules (:mod:`~hybridcert.serve.rules`) need only the core package and run on the
one sequential driver (:mod:`hybridcert.sequential.driver`); the web layer
(:mod:`~hybridcert.serve.app`, :mod:`~hybridcert.serve.service`) needs the ``serve`` extra.
"""

from hybridcert.serve.rules import DecisionRules, Reading

__all__ = ["DecisionRules", "Reading"]
