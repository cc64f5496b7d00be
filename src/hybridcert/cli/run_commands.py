"""``hybridcert certify`` (resumable dataset runs) and ``hybridcert report``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from hybridcert.cli.options import (
    AllowEmptyText,
    AllowOutsidePaths,
    Alpha,
    AppendPlaceholder,
    AppendSlots,
    Blocks,
    Boundary,
    Checkpoint,
    Columns,
    ConfigFile,
    Dataset,
    Device,
    FlaggedClass,
    IdColumn,
    ImageColumn,
    ImageSize,
    KeepProb,
    LabelColumn,
    LabelMap,
    Limit,
    MaxTokens,
    Model,
    ModelArgs,
    NoiseKind,
    NoTextNoise,
    NumClasses,
    Price,
    RuleKind,
    Seed,
    Sigma,
    Strict,
    SuffixLength,
    Targets,
    TextColumn,
    Threat,
    Threshold,
    column_map,
    parse_blocks,
    parse_label_map,
    parse_model_args,
    parse_size,
    parse_targets,
)

Opt = typer.Option

CODE_WARNING = ("--model and a --config naming a model RUN THAT CODE: a config is code; use "
                "only entry points and configs you trust.")


def certify(
    config: ConfigFile = None,
    dataset: Dataset = None,
    columns: Columns = None,
    image_column: ImageColumn = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    limit: Limit = None,
    id_column: IdColumn = None,
    label_map: LabelMap = None,
    image_size: ImageSize = None,
    allow_outside_paths: AllowOutsidePaths = None,
    strict: Strict = None,
    checkpoint: Checkpoint = None,
    model: Model = None,
    model_arg: ModelArgs = None,
    num_classes: NumClasses = None,
    sigma: Sigma = None,
    keep_prob: KeepProb = None,
    noise: NoiseKind = None,
    block: Blocks = None,
    threat: Threat = None,
    suffix_length: SuffixLength = None,
    append_slots: AppendSlots = None,
    append_placeholder: AppendPlaceholder = None,
    no_text_noise: NoTextNoise = None,
    allow_empty_text: AllowEmptyText = None,
    rule: RuleKind = None,
    threshold: Threshold = None,
    flagged_class: FlaggedClass = None,
    mode: Annotated[str | None, Opt("--mode", help="fixed, or sequential: decision or radius "
                                    "(then --n is the sample cap).")] = None,
    n0: Annotated[int | None, Opt("--n0", help="Selection samples.")] = None,
    n: Annotated[int | None, Opt("--n", help="Estimation samples (sequential: the cap).")]
    = None,
    alpha: Alpha = None,
    p_upper: Annotated[str | None, Opt("--p-upper", help="complement (two classes) or "
                                       "bonferroni (every other class bounded).")] = None,
    seed: Seed = None,
    max_tokens: MaxTokens = None,
    target: Targets = None,
    tolerance: Annotated[float | None, Opt("--tolerance", help="Radius-mode L2 "
                                           "tolerance.")] = None,
    max_radius: Annotated[float | None, Opt("--max-radius", help="Radius mode: largest L2 "
                                            "radius of interest.")] = None,
    boundary: Boundary = None,
    price: Price = None,
    store: Annotated[Path | None, Opt("--store", help="SQLite file of the run (default: the "
                                      "config's store, else runs/run.sqlite).")] = None,
    new_run: Annotated[bool, Opt("--new-run", help="Start a new run in the store.")] = False,
    recertify_changed: Annotated[bool, Opt("--recertify-changed", help="Re-certify inputs "
                                           "whose content changed since they were stored "
                                           "(replacing their rows).")] = False,
    backend: Annotated[str, Opt("--backend", help="local or ray.")] = "local",
    workers: Annotated[int, Opt("--workers", help="Ray actors.")] = 2,
    address: Annotated[str | None, Opt("--address", help="Join an existing Ray cluster "
                                       "(see the README's security notes).")] = None,
    device: Device = "cpu",
    batch_size: Annotated[int, Opt("--batch-size")] = 512,
    parallel_batches: Annotated[int, Opt("--parallel-batches", help="Local backend: batches "
                                         "run side by side, one thread each (on a CPU: the "
                                         "number of cores).")] = 1,
    quiet: Annotated[bool, Opt("--quiet", help="No progress bar, no per-input and no start-up "
                                 "lines (errors and warnings are still printed).")]
    = False,
) -> None:
    """Certify every input of a dataset into a resumable store; one line per input on
    stdout (its decision and certified region), the progress bar on stderr.

    --model and --config name code that runs in this process: a config is code.
    """
    from hybridcert.runs.config import ConfigError, RunConfig, execution_settings
    from hybridcert.runs.runner import ModelFailure, check_fit, check_rows, load_items, plan
    from hybridcert.runs.store import RunStore
    from hybridcert.smoothing import result_row

    # 1. Every option, checked before anything is read or written.
    run_config = RunConfig.from_sources(
        config, dataset=dataset, columns=column_map(columns, image_column, text_column),
        label_column=label_column, id_column=id_column, limit=limit,
        label_map=parse_label_map(label_map), image_size=parse_size(image_size),
        allow_outside_paths=allow_outside_paths, strict=strict, checkpoint=checkpoint,
        model=model, model_args=parse_model_args(model_arg),
        num_classes=num_classes, sigma=sigma, keep_prob=keep_prob, noise=noise,
        blocks=parse_blocks(block), threat=threat,
        suffix_length=suffix_length, append_slots=append_slots,
        append_placeholder=append_placeholder, no_text_noise=no_text_noise,
        allow_empty_text=allow_empty_text, rule=rule, threshold=threshold,
        flagged_class=flagged_class, mode=mode, n0=n0, n=n, alpha=alpha, p_upper=p_upper,
        seed=seed, max_tokens=max_tokens,
        targets=parse_targets(target),
        tolerance=tolerance, max_radius=max_radius, boundary=boundary, price=price)
    store = store or Path(execution_settings(config).get("store", "runs/run.sqlite"))
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend must be local or ray, got {backend!r}")
    for name, value in (("--workers", workers), ("--batch-size", batch_size),
                        ("--parallel-batches", parallel_batches)):
        if value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value}")
    if run_config.mode == "fixed":
        from hybridcert.smoothing import check_can_certify

        check_can_certify(run_config.n, run_config.alpha / 2 if run_config.p_upper ==
                          "bonferroni" else run_config.alpha)
    run = plan(run_config, device, batch_size, parallel_batches)
    items = load_items(run)
    check_rows(run, items)
    if items:
        check_fit(run, items[0])

    # 2. The store: resume what belongs to these exact inputs.
    run_store = RunStore(store, run_config.to_dict(), new_run=new_run,
                         details={"blocks": run.noise.describe(),
                                  "model": run.adapter.describe()})
    try:
        finished = run_store.finished()
        changed = [it.input_id for it in items
                   if it.input_id in finished and finished[it.input_id] != it.content_hash]
        if changed and not recertify_changed:
            shown = ", ".join(repr(c) for c in changed[:5]) + (" ..." if len(changed) > 5
                                                                else "")
            raise ConfigError(f"{len(changed)} input(s) changed since they were stored in "
                              f"{store} ({shown}); pass --recertify-changed to re-certify "
                              f"them, or use another --store")
        todo = [it for it in items if finished.get(it.input_id) != it.content_hash]
        replace = set(changed)
        if not quiet:
            for name, processor in run.adapter.images.items():
                typer.echo(f"image block {name}: certified L2 radii are in {processor.space}",
                           err=True)
            notes = sum(bool(it.notes) for it in items)
            typer.echo(f"run {run_store.run_id} in {store}: {len(items)} inputs, "
                       f"{len(items) - len(todo)} already done, {len(todo)} to go"
                       + (f"; {notes} input(s) transformed (see the report)" if notes else ""),
                       err=True)
        stored = _run(run, run_config, todo, run_store, replace, backend, device, batch_size,
                      workers, address, parallel_batches, quiet, result_row)
    except KeyboardInterrupt:
        done = len(run_store.finished())
        run_store.close()
        typer.echo(f"hybridcert: interrupted; {done} of {len(items)} inputs are stored in "
                   f"{store}; run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    except ModelFailure:
        done = len(run_store.finished())
        run_store.close()
        typer.echo(f"{done} of {len(items)} inputs are stored in {store}; run the same "
                   f"command again once the model is fixed to certify the rest", err=True)
        raise
    run_store.close()
    if not quiet:
        typer.echo(f"done: {stored} input(s) certified into {store}", err=True)


def _run(run, run_config, todo, run_store, replace, backend, device, batch_size, workers,
         address, parallel_batches, quiet, result_row) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from hybridcert.runs.runner import LocalBackend, RayBackend

    columns = [TextColumn("certify"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    state = {"samples": 0, "start": time.perf_counter(), "stored": 0}
    names = run.adapter.class_names
    # the bar on stderr, the per-input lines on stdout (a pipe or file gets only the lines)
    with Progress(*columns, disable=quiet, transient=False, console=Console(stderr=True),
                  redirect_stdout=False) as progress:
        task = progress.add_task("certify", total=len(todo), rate="")
        on_screen = sys.stdout.isatty() and progress.console.is_terminal

        def on_result(item, result) -> None:
            row = result_row(item.idx, item.input_id, item.label, result)
            if item.notes:        # the data's notes, then the result's own
                row["notes"] = list(item.notes) + row.get("notes", [])
            run_store.write(row, item.content_hash, replace=item.input_id in replace)
            state["stored"] += 1
            if not quiet:
                line = summary_line(row, result, names)
                if on_screen:       # above the live bar (both streams are the same terminal)
                    progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
                else:
                    typer.echo(line)
            state["samples"] += result.queries
            elapsed = time.perf_counter() - state["start"]
            progress.update(task, advance=1,
                            rate=f"{state['samples'] / max(elapsed, 1e-9):,.0f} samples/s")

        if backend == "ray":
            RayBackend(run_config, device, batch_size, workers, address).certify(todo,
                                                                                on_result)
        else:
            LocalBackend(run).certify(todo, on_result)
    return state["stored"]


def summary_line(row: dict, result, class_names=None) -> str:
    """``id: decision (label L): certified region`` — one input of ``certify``."""
    predict = row["predict"]
    if result.decision is not None:
        decision = result.decision
    elif predict < 0:
        decision = "abstain"
    else:
        name = class_names[predict] if class_names and predict < len(class_names) else None
        decision = f"class {predict}" + (f" ({name})" if name else "")
    line = f"{row['id']}: {decision}" + ("" if row["label"] is None
                                         else f" (label {row['label']})")
    if result.region.certified:
        line += f": {result.region}"
    if result.targets:
        done = sum(bool(t["certified"]) for t in result.targets)
        line += f"; {done} of {len(result.targets)} target region(s) certified"
    return line


def report(
    store: Annotated[Path, typer.Argument(help="SQLite file of the run.")],
    out: Annotated[Path | None, Opt("--out", help="Folder for tables, plots and exports "
                                    "(default: beside the store, named like it without "
                                    "its suffix).")] = None,
    run_id: Annotated[int | None, Opt("--run", help="Report this run of the store (default: "
                                      "the last one).")] = None,
) -> None:
    """Certified-accuracy tables (Markdown, CSV) per class and balanced, per-target answers,
    plots with the sample-size ceiling, and per-input exports."""
    from hybridcert.runs.report import write_report

    folder = write_report(store, out or store.with_suffix(""), run_id=run_id)
    typer.echo((folder / "REPORT.md").read_text())
