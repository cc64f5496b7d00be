"""``hybridcert dataset export safety --split test --out DIR``: the benchmark's records as
JSONL + PNG files, for running other models on them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="dataset", help="Export the built-in datasets.", no_args_is_help=True,
                  add_completion=False)


@app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="Dataset to export (only 'safety').")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write data.jsonl and PNGs to.")],
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", min=1,
                                              help="Keep only the first N records.")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="Where built splits are cached.")]
    = Path("artifacts/data"),
) -> None:
    """Write DIR/data.jsonl ({"id", "image", "text", "label"}, label 1 = unsafe) and the
    images it names; an existing complete export is reused."""
    if name != "safety":
        raise ValueError(f"dataset must be 'safety', got {name!r}")
    from hybridcert.datasets.safety import export_split

    path = export_split(split, out, limit, cache)
    count = sum(1 for _ in path.open(encoding="utf-8"))
    typer.echo(f"{count} records of safety:{split} -> {path}")
