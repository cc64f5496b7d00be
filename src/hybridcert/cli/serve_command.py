"""``hybridcert serve`` (being written: see the service issue)."""

from __future__ import annotations


def serve() -> None:
    """Serve certified moderation over HTTP (not available in this build yet)."""
    from hybridcert.runs.config import ConfigError

    raise ConfigError("hybridcert serve is not available in this build yet")
