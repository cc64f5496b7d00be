"""``hybridcert inspect``: per row, what the model receives and what the certificate is about
(see :mod:`hybridcert.inspect`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hybridcert.cli.options import (
    AllowEmptyText,
    AllowOutsidePaths,
    AppendPlaceholder,
    AppendSlots,
    Blocks,
    Checkpoint,
    Columns,
    ConfigFile,
    Dataset,
    IdColumn,
    ImageColumn,
    ImageSize,
    KeepProb,
    LabelColumn,
    LabelMap,
    Limit,
    Model,
    ModelArgs,
    NoiseKind,
    NoTextNoise,
    NumClasses,
    Sigma,
    Strict,
    SuffixLength,
    TextColumn,
    Threat,
    column_map,
    parse_blocks,
    parse_label_map,
    parse_model_args,
    parse_size,
)

Opt = typer.Option

LEGEND = ("*tok* noised (the adversary may change it), +tok+ appended slot (noised), {tok} "
          "special (never noised), plain: the text's own token, not noised; <pad xN> padding")


def inspect(
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
    row: Annotated[list[str] | None, Opt("--row", help="Only the row with this id "
                                         "(repeatable).")] = None,
    summary: Annotated[bool, Opt("--summary", help="One line per row.")] = False,
    as_json: Annotated[bool, Opt("--json", help="JSON: one object (with --summary: one "
                                 "object per line).")] = False,
) -> None:
    """Show, per row, what the model receives and what a certificate would be about.

    Takes certify's data, model, noise and threat options (and --config) and
    reads the rows exactly as certify would.  Per row: the model's token ids
    with the noised positions marked, specials and padding apart, V, appended
    slots, the image size before and after the processor and the space of the
    L2 ball, the data checks' notes, and warnings: no noisable token, a block
    not noised, a text cut at the model's maximum length, special tokens in
    the user's text, a threat that noises only part of the text.
    Certifies nothing, writes nothing.

    --model and --config name code that runs in this process: a config is code.
    """
    from hybridcert.inspect import inspect_rows
    from hybridcert.runs.config import RunConfig

    run_config = RunConfig.from_sources(
        config, dataset=dataset, columns=column_map(columns, image_column, text_column),
        label_column=label_column, id_column=id_column, limit=limit,
        label_map=parse_label_map(label_map), image_size=parse_size(image_size),
        allow_outside_paths=allow_outside_paths, strict=strict, checkpoint=checkpoint,
        model=model, model_args=parse_model_args(model_arg), num_classes=num_classes,
        sigma=sigma, keep_prob=keep_prob, noise=noise,
        blocks=parse_blocks(block), threat=threat, suffix_length=suffix_length,
        append_slots=append_slots, append_placeholder=append_placeholder,
        no_text_noise=no_text_noise, allow_empty_text=allow_empty_text)
    result = inspect_rows(run_config, row)
    if as_json:
        if summary:
            for view in result.rows:
                typer.echo(json.dumps(view.summary(), allow_nan=False))
        else:
            typer.echo(json.dumps(result.to_dict(), allow_nan=False))
        return
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=summary)
    if summary:
        for view in result.rows:
            console.print(summary_line(view), markup=False)
    else:
        print_rows(result, console)
        console.print(f"\n{len(result.rows)} row(s), {result.warnings} warning(s)",
                      markup=False)


def summary_line(view) -> str:
    """``id  label L  text: 12 attended, 10 noised, V=30517  image: 50x40 -> 3x32x32  ...``"""
    from hybridcert.inspect import TokenView

    parts = [view.id, f"label {'-' if view.label is None else view.label}"]
    for b in view.blocks:
        if isinstance(b, TokenView):
            v = "" if b.vocab_size is None else f", V={b.vocab_size}"
            slots = f", {b.slots['count']} slot(s) at {b.slots['at']}" if b.slots else ""
            parts.append(f"{b.name} [{b.noise}]: {b.attended} attended, {b.noised} noised"
                         f"{v}{slots}")
        else:
            before = f"{b.source['width']}x{b.source['height']} -> " if b.source else ""
            parts.append(f"{b.name} [{b.noise}]: {before}{'x'.join(map(str, b.shape))}")
    parts.append(f"{len(view.notes)} note(s)")
    parts.append(f"{len(view.warnings)} warning(s)" + (f": {view.warnings[0]}" + (
        " ..." if len(view.warnings) > 1 else "") if view.warnings else ""))
    return "  ".join(parts)


def print_rows(result, console) -> None:
    from rich.text import Text

    from hybridcert.inspect import TokenView

    console.print(Text(f"model {result.model}; {LEGEND}", style="dim"))
    for line in result.context:
        console.print(Text(line, style="dim"))
    for view in result.rows:
        label = "-" if view.label is None else view.label
        console.print(Text(f"\nrow {view.id!r} ({view.where}), label {label}", style="bold"))
        for b in view.blocks:
            if isinstance(b, TokenView):
                v = "" if b.vocab_size is None else f", V = {b.vocab_size}"
                threat = b.threat.get("threat") or "-"
                console.print(Text(f"  {b.name} [{b.noise}, threat {threat}{v}]: {b.length} "
                                   f"ids, {b.attended} attended, {b.content} text token(s), "
                                   f"{b.noised} noised (max length {b.max_length})"))
                console.print(_styled(b))
                if b.slots:
                    where = f"before {b.slots['before']}" if b.slots["before"] else "at the end"
                    console.print(Text(f"    {b.slots['count']} slot(s) of "
                                       f"{b.slots['placeholder']!r} at position "
                                       f"{b.slots['at']}, {where}"))
            else:
                before = (f"{b.source['width']}x{b.source['height']} {b.source['mode']} -> "
                          if b.source else "")
                console.print(Text(f"  {b.name} [{b.noise}]: {before}"
                                   f"{'x'.join(map(str, b.shape))} (CxHxW)"))
                console.print(Text(f"    L2 ball in {b.l2_space}"))
        batch = ", ".join(f"{k} ({', '.join(map(str, v['shape']))}) {v['dtype']}"
                          for k, v in view.batch.items())
        if batch:
            console.print(Text(f"  model batch: {batch}"))
        for note in view.notes:
            console.print(Text(f"  note: {note}", style="cyan"))
        for warning in view.warnings:
            console.print(Text(f"  warning: {warning}", style="yellow"))


def _styled(view):
    from rich.text import Text

    line = Text("    ")
    styles = {"noised": "bold green", "slot": "bold magenta", "special": "dim",
              "text": "", "padding": "dim"}
    for i, (part, role) in enumerate(view.segments()):
        line.append((" " if i else "") + part, style=styles[role])
    return line
