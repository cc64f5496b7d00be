"""``hybridcert certify`` (resumable dataset runs) and ``hybridcert report``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option

CODE_WARNING = ("--model and a --config naming a model RUN THAT CODE: a config is code; use "
                "only entry points and configs you trust.")


def certify(
    config: Annotated[Path | None, Opt("--config", help="TOML file of run options (flags "
                                       "override it). A config is code: it names the model "
                                       "entry point that will run.")] = None,
    dataset: Annotated[str | None, Opt("--dataset", help="safety:test[:N], a .jsonl/.parquet "
                                       "file, a folder of .jsonl files, hateful_memes:PATH or "
                                       "mm_safetybench:PATH.")] = None,
    columns: Annotated[str | None, Opt("--columns", help="Block=column map, e.g. "
                                       "image=img,text=caption.")] = None,
    image_column: Annotated[str | None, Opt("--image-column", help="Column of the image "
                                            "block.")] = None,
    text_column: Annotated[str | None, Opt("--text-column", help="Column of the text "
                                           "block.")] = None,
    label_column: Annotated[str | None, Opt("--label-column")] = None,
    limit: Annotated[int | None, Opt("--limit", help="Only the first N rows.")] = None,
    id_column: Annotated[str | None, Opt("--id-column")] = None,
    label_map: Annotated[str | None, Opt("--label-map", help="String labels to classes, e.g. "
                                         "safe=0,unsafe=1.")] = None,
    image_size: Annotated[str | None, Opt("--image-size", help="HxW (or N) when the model "
                                          "states no image size; resizing is reported.")]
    = None,
    allow_outside_paths: Annotated[bool | None, Opt("--allow-outside-paths", help="Read image "
                                                    "paths outside the dataset's folder.")]
    = None,
    strict: Annotated[bool | None, Opt("--strict", help="Refuse any silent transformation "
                                       "(resizing, truncation, colour change).")] = None,
    checkpoint: Annotated[str | None, Opt("--checkpoint", help="Folder from "
                                          "`hybridcert train`.")] = None,
    model: Annotated[str | None, Opt("--model", help="Entry point module:factory returning a "
                                     "ModelAdapter or a model. It RUNS THAT CODE.")] = None,
    num_classes: Annotated[int | None, Opt("--num-classes")] = None,
    sigma: Annotated[float | None, Opt("--sigma", help="Gaussian noise on the image block.")]
    = None,
    keep_prob: Annotated[float | None, Opt("--keep-prob", help="Token keep probability of the "
                                           "text block.")] = None,
    noise: Annotated[str | None, Opt("--noise", help="Text noise: substitution or mask.")]
    = None,
    block: Annotated[list[str] | None, Opt("--block", help="Per-block noise NAME=SPEC, SPEC "
                                           "one of gaussian:S, substitution:A, mask:A, none "
                                           "(repeatable).")] = None,
    threat: Annotated[str | None, Opt("--threat", help="Text threat: substitute (anywhere), "
                                      "suffix or append.")] = None,
    suffix_length: Annotated[int | None, Opt("--suffix-length", help="Threat suffix: the "
                                             "widest attackable suffix D.")] = None,
    append_slots: Annotated[int | None, Opt("--append-slots", help="Threat append: slots "
                                            "appended and noised.")] = None,
    append_placeholder: Annotated[str | None, Opt("--append-placeholder", help="Threat "
                                                  "append: the placeholder token (default "
                                                  "'!').")] = None,
    rule: Annotated[str | None, Opt("--rule", help="majority (vote), or a detector: flag, "
                                    "benign, detector (both sides).")] = None,
    threshold: Annotated[float | None, Opt("--threshold", help="Detector threshold tau: flag "
                                           "iff P(flagged class) >= tau.")] = None,
    flagged_class: Annotated[int | None, Opt("--flagged-class")] = None,
    mode: Annotated[str | None, Opt("--mode", help="fixed, or sequential: decision or radius "
                                    "(then --n is the sample cap).")] = None,
    n0: Annotated[int | None, Opt("--n0", help="Selection samples.")] = None,
    n: Annotated[int | None, Opt("--n", help="Estimation samples (sequential: the cap).")]
    = None,
    alpha: Annotated[float | None, Opt("--alpha", help="Failure probability.")] = None,
    p_upper: Annotated[str | None, Opt("--p-upper", help="complement (two classes) or "
                                       "bonferroni (every other class bounded).")] = None,
    seed: Annotated[int | None, Opt("--seed")] = None,
    max_tokens: Annotated[int | None, Opt("--max-tokens")] = None,
    target: Annotated[list[str] | None, Opt("--target", help="Target region EPS,R or "
                                            "BLOCK=SIZE,... (repeatable).")] = None,
    tolerance: Annotated[float | None, Opt("--tolerance", help="Radius-mode L2 "
                                           "tolerance.")] = None,
    max_radius: Annotated[float | None, Opt("--max-radius", help="Radius mode: largest L2 "
                                            "radius of interest.")] = None,
    boundary: Annotated[str | None, Opt("--boundary", help="Sequential confidence sequence: "
                                        "mixture (per draw) or looks (long runs, "
                                        "tables).")] = None,
    price: Annotated[float | None, Opt("--price", help="Decision mode with many targets: "
                                       "give up a target projected to cost more draws.")]
    = None,
    store: Annotated[Path, Opt("--store", help="SQLite file of the run.")] = Path(
        "runs/run.sqlite"),
    new_run: Annotated[bool, Opt("--new-run", help="Start a new run in the store.")] = False,
    recertify_changed: Annotated[bool, Opt("--recertify-changed", help="Re-certify inputs "
                                           "whose content changed since they were stored "
                                           "(replacing their rows).")] = False,
    backend: Annotated[str, Opt("--backend", help="local or ray.")] = "local",
    workers: Annotated[int, Opt("--workers", help="Ray actors.")] = 2,
    address: Annotated[str | None, Opt("--address", help="Join an existing Ray cluster "
                                       "(see the README's security notes).")] = None,
    device: Annotated[str, Opt("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    batch_size: Annotated[int, Opt("--batch-size")] = 512,
    parallel_batches: Annotated[int, Opt("--parallel-batches", help="Local backend: batches "
                                         "run side by side, one thread each (on a CPU: the "
                                         "number of cores).")] = 1,
    quiet: Annotated[bool, Opt("--quiet", help="No progress bar.")] = False,
) -> None:
    """Certify every input of a dataset into a resumable store.

    --model and --config name code that runs in this process: a config is code.
    """
    from hybridcert.runs.config import ConfigError, RunConfig, parse_mapping, parse_target
    from hybridcert.runs.runner import check_fit, load_items, plan
    from hybridcert.runs.store import RunStore
    from hybridcert.smoothing import result_row

    # 1. Every option, checked before anything is read or written.
    column_map = parse_mapping("--columns", columns) if columns else None
    if image_column or text_column:
        column_map = dict(column_map or {})
        if image_column:
            column_map["image"] = image_column
        if text_column:
            column_map["text"] = text_column
    run_config = RunConfig.from_sources(
        config, dataset=dataset, columns=column_map, label_column=label_column,
        id_column=id_column, limit=limit,
        label_map=parse_mapping("--label-map", label_map, int) if label_map else None,
        image_size=_parse_size(image_size) if image_size else None,
        allow_outside_paths=allow_outside_paths, strict=strict, checkpoint=checkpoint,
        model=model, num_classes=num_classes, sigma=sigma, keep_prob=keep_prob, noise=noise,
        blocks=_parse_blocks(block) if block else None, threat=threat,
        suffix_length=suffix_length, append_slots=append_slots,
        append_placeholder=append_placeholder, rule=rule, threshold=threshold,
        flagged_class=flagged_class, mode=mode, n0=n0, n=n, alpha=alpha, p_upper=p_upper,
        seed=seed, max_tokens=max_tokens,
        targets=[parse_target(t) for t in target] if target else None,
        tolerance=tolerance, max_radius=max_radius, boundary=boundary, price=price)
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
    if items:
        check_fit(run, items[0])

    # 2. The store: resume what belongs to these exact inputs.
    run_store = RunStore(store, run_config.to_dict(), new_run=new_run)
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
    run_store.close()
    typer.echo(f"done: {stored} input(s) certified into {store}", err=True)


def _run(run, run_config, todo, run_store, replace, backend, device, batch_size, workers,
         address, parallel_batches, quiet, result_row) -> int:
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
    with Progress(*columns, disable=quiet, transient=False) as progress:
        task = progress.add_task("certify", total=len(todo), rate="")

        def on_result(item, result) -> None:
            row = result_row(item.idx, item.input_id, item.label, result)
            if item.notes:
                row["notes"] = list(item.notes)
            run_store.write(row, item.content_hash, replace=item.input_id in replace)
            state["stored"] += 1
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


def _parse_size(value: str) -> list[int]:
    from hybridcert.runs.config import ConfigError

    parts = value.lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--image-size must look like 224 or 224x224, got {value!r}") \
            from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or min(numbers) < 1:
        raise ConfigError(f"--image-size must look like 224 or 224x224, got {value!r}")
    return numbers


def _parse_blocks(values: list[str]) -> dict[str, str]:
    from hybridcert.runs.config import ConfigError

    out = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ConfigError(f"--block must look like NAME=gaussian:0.25 (or substitution:A, "
                              f"mask:A, none), got {value!r}")
        out[name.strip()] = spec.strip()
    return out


def report(
    store: Annotated[Path, typer.Argument(help="SQLite file of the run.")],
    out: Annotated[Path | None, Opt("--out", help="Folder for tables, plots and exports.")]
    = None,
) -> None:
    """Certified-accuracy tables (Markdown, CSV), plots, per-class metrics and exports."""
    from hybridcert.runs.report import write_report

    folder = write_report(store, out or store.with_suffix(""))
    typer.echo((folder / "REPORT.md").read_text())
