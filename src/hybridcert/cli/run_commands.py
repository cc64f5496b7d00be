"""``hybridcert certify`` (resumable dataset runs) and ``hybridcert report``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Opt = typer.Option


def certify(
    dataset: Annotated[str | None, Opt("--dataset", help="safety:test[:N], a .jsonl/.parquet "
                                       "file or a folder of .jsonl files.")] = None,
    checkpoint: Annotated[str | None, Opt("--checkpoint", help="Folder from "
                                          "`hybridcert train`.")] = None,
    model: Annotated[str | None, Opt("--model", help="Entry point module:factory.")] = None,
    sigma: Annotated[float | None, Opt("--sigma", help="Image noise (> 0).")] = None,
    keep_prob: Annotated[float | None, Opt("--keep-prob", help="Token keep probability.")]
    = None,
    noise: Annotated[str | None, Opt("--noise", help="substitution or mask.")] = None,
    n0: Annotated[int | None, Opt("--n0", help="Selection samples.")] = None,
    n: Annotated[int | None, Opt("--n", help="Estimation samples.")] = None,
    alpha: Annotated[float | None, Opt("--alpha", help="Failure probability.")] = None,
    seed: Annotated[int | None, Opt("--seed")] = None,
    max_tokens: Annotated[int | None, Opt("--max-tokens")] = None,
    mode: Annotated[str | None, Opt("--mode", help="fixed, or sequential: decision or "
                                    "radius (then --n is the sample cap).")] = None,
    target: Annotated[list[str] | None, Opt("--target", help="Decision target EPS,R "
                                            "(repeatable).")] = None,
    tolerance: Annotated[float | None, Opt("--tolerance", help="Radius-mode L2 "
                                           "tolerance.")] = None,
    max_radius: Annotated[float | None, Opt("--max-radius", help="Radius mode: largest L2 "
                                            "radius of interest.")] = None,
    store: Annotated[Path, Opt("--store", help="SQLite file of the run.")] = Path(
        "runs/run.sqlite"),
    new_run: Annotated[bool, Opt("--new-run", help="Start a new run in the store.")] = False,
    backend: Annotated[str, Opt("--backend", help="local or ray.")] = "local",
    workers: Annotated[int, Opt("--workers", min=1, help="Ray actors.")] = 2,
    address: Annotated[str | None, Opt("--address", help="Existing Ray cluster.")] = None,
    device: Annotated[str, Opt("--device")] = "cpu",
    batch_size: Annotated[int, Opt("--batch-size", min=1)] = 512,
    parallel_batches: Annotated[int, Opt("--parallel-batches", min=1, help="Local backend: "
                                         "batches run side by side, one thread each (on a "
                                         "CPU: the number of cores).")] = 1,
    config: Annotated[Path | None, Opt("--config", help="TOML file; flags override it.")]
    = None,
    quiet: Annotated[bool, Opt("--quiet", help="No progress bar.")] = False,
) -> None:
    """Certify every input of a dataset into a resumable store."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from hybridcert.runs.runner import (
        RunConfig,
        build_classifier,
        check_fit,
        load_items,
        run_local,
        run_ray,
    )
    from hybridcert.runs.store import RunStore

    settings = RunConfig().to_dict()
    if config is not None:
        if not config.exists():
            raise FileNotFoundError(f"config file {config} not found")
        try:
            loaded = tomllib.loads(config.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {config}: {err}") from None
        unknown = sorted(set(loaded) - set(settings))
        if unknown:
            raise ValueError(f"config file {config}: unknown keys {unknown}")
        settings.update(loaded)
    flags = {"dataset": dataset, "checkpoint": checkpoint, "model": model, "sigma": sigma,
             "keep_prob": keep_prob, "noise": noise, "n0": n0, "n": n, "alpha": alpha,
             "seed": seed, "max_tokens": max_tokens, "mode": mode, "tolerance": tolerance,
             "max_radius": max_radius,
             "targets": _parse_targets(target) if target else None}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if settings["noise"] not in ("substitution", "mask"):
        raise ValueError(f"--noise must be substitution or mask, got {settings['noise']!r}")
    if backend not in ("local", "ray"):
        raise ValueError(f"--backend must be local or ray, got {backend!r}")
    run_config = RunConfig(**settings)
    items = load_items(run_config)
    classifier = build_classifier(run_config, device, batch_size, parallel_batches)
    if items:
        check_fit(classifier, items[0])   # fail before touching the store
    run_store = RunStore(store, run_config.to_dict(), new_run=new_run)
    finished = run_store.finished()
    todo = [it for it in items if it.idx not in finished]
    typer.echo(f"run {run_store.run_id} in {store}: {len(items)} inputs, {len(finished)} "
               f"already done, {len(todo)} to go", err=True)
    columns = [TextColumn("certify"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=quiet, transient=False) as progress:
        task = progress.add_task("certify", total=len(todo), rate="")
        state = {"samples": 0, "start": time.perf_counter()}

        def on_done(samples: int) -> None:
            state["samples"] += samples
            elapsed = time.perf_counter() - state["start"]
            progress.update(task, advance=1, rate=f"{state['samples'] / elapsed:,.0f} samples/s")

        if backend == "ray":
            run_ray(run_config, todo, run_store, device, batch_size, on_done, workers, address)
        else:
            run_local(run_config, todo, run_store, classifier, on_done)
    run_store.close()


def _parse_targets(values: list[str]) -> list[list[float]]:
    targets = []
    for value in values:
        try:
            eps, r = value.split(",")
            targets.append([float(eps), int(r)])
        except ValueError:
            raise ValueError(f"--target must look like EPS,R (e.g. 0.25,1), got {value!r}") \
                from None
    return targets


def report(
    store: Annotated[Path, typer.Argument(help="SQLite file of the run.")],
    out: Annotated[Path | None, Opt("--out", help="Folder for tables, plots and exports.")]
    = None,
) -> None:
    """Certified-accuracy tables (Markdown, CSV), plots, abstain rate and per-input exports."""
    from hybridcert.runs.report import write_report

    if not store.exists():
        raise FileNotFoundError(f"store {store} not found")
    folder = write_report(store, out or store.with_suffix(""))
    typer.echo((folder / "REPORT.md").read_text())
