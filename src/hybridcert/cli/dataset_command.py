"""``hybridcert dataset`` (being written: see the benchmark issue)."""

from __future__ import annotations

import typer

dataset = typer.Typer(help="The demo dataset: export it for other tools.", no_args_is_help=True)


@dataset.command("export")
def export() -> None:
    """Export a split of the demo dataset (not available in this build yet)."""
    from hybridcert.runs.config import ConfigError

    raise ConfigError("hybridcert dataset export is not available in this build yet")
