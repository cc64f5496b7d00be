"""Options shared by ``certify``, ``inspect`` and ``serve``: declared once (name, help), parsed
once.

They build the same :class:`~hybridcert.runs.config.RunConfig` from them, so a model, its
noise and its decision rule mean the same in an offline run, in ``inspect`` and in the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option

ConfigFile = Annotated[Path | None, Opt("--config", help="TOML file of run options (flags "
                                        "override it). A config is code: it names the model "
                                        "entry point that will run.")]
Dataset = Annotated[str | None, Opt("--dataset", help="safety:test[:N], a .jsonl/.parquet "
                                    "file, a folder of .jsonl files, hateful_memes:PATH or "
                                    "mm_safetybench:PATH.")]
Columns = Annotated[str | None, Opt("--columns", help="Block=column map, e.g. "
                                    "image=img,text=caption.")]
ImageColumn = Annotated[str | None, Opt("--image-column", help="Column of the image block.")]
TextColumn = Annotated[str | None, Opt("--text-column", help="Column of the text block.")]
LabelColumn = Annotated[str | None, Opt("--label-column")]
Limit = Annotated[int | None, Opt("--limit", help="Only the first N rows.")]
IdColumn = Annotated[str | None, Opt("--id-column")]
LabelMap = Annotated[str | None, Opt("--label-map", help="String labels to classes, e.g. "
                                     "safe=0,unsafe=1.")]
AllowOutsidePaths = Annotated[bool | None, Opt("--allow-outside-paths", help="Read image "
                                               "paths outside the dataset's folder.")]
Checkpoint = Annotated[str | None, Opt("--checkpoint", help="Folder from `hybridcert train`.")]
Model = Annotated[str | None, Opt("--model", help="Entry point module:factory returning a "
                                  "ModelAdapter or a model. It RUNS THAT CODE.")]
ModelArgs = Annotated[list[str] | None, Opt("--model-arg", help="KEY=VALUE passed to the "
                                            "--model factory (repeatable; VALUE read as JSON "
                                            "where it parses, else a string).")]
NumClasses = Annotated[int | None, Opt("--num-classes")]
ImageSize = Annotated[str | None, Opt("--image-size", help="HxW (or N) when the model states "
                                      "no image size; resizing is reported.")]
Strict = Annotated[bool | None, Opt("--strict", help="Refuse any silent transformation "
                                    "(resizing, truncation, colour change).")]
Sigma = Annotated[float | None, Opt("--sigma", help="Gaussian noise on the image block.")]
KeepProb = Annotated[float | None, Opt("--keep-prob", help="Token keep probability of the "
                                       "text block.")]
NoiseKind = Annotated[str | None, Opt("--noise", help="Text noise: substitution or mask.")]
Blocks = Annotated[list[str] | None, Opt("--block", help="Per-block noise NAME=SPEC, SPEC one "
                                         "of gaussian:S, substitution:A, mask:A, none "
                                         "(repeatable).")]
Threat = Annotated[str | None, Opt("--threat", help="Text threat: substitute (anywhere), "
                                   "suffix or append.")]
SuffixLength = Annotated[int | None, Opt("--suffix-length", help="Threat suffix: the widest "
                                         "attackable suffix D.")]
AppendSlots = Annotated[int | None, Opt("--append-slots", help="Threat append: slots appended "
                                        "and noised.")]
AppendPlaceholder = Annotated[str | None, Opt("--append-placeholder", help="Threat append: "
                                              "the placeholder token (default '!').")]
NoTextNoise = Annotated[bool | None, Opt("--no-text-noise", help="The model reads text but "
                                         "no text noise is wanted: certify image changes "
                                         "alone (required then; the report says tokens: none "
                                         "certified).")]
AllowEmptyText = Annotated[bool | None, Opt("--allow-empty-text", help="Certify a row whose "
                                            "noised text has no noisable token (empty, or "
                                            "only unknown words) on its other blocks alone, "
                                            "noted per row (refused otherwise).")]
RuleKind = Annotated[str | None, Opt("--rule", help="majority (vote), or a detector: flag, "
                                     "benign, detector (both sides).")]
Threshold = Annotated[float | None, Opt("--threshold", help="Detector threshold tau: flag iff "
                                        "P(flagged class) >= tau.")]
FlaggedClass = Annotated[int | None, Opt("--flagged-class", help="The detector's class (e.g. "
                                         "unsafe; default 1).")]
Alpha = Annotated[float | None, Opt("--alpha", help="Failure probability.")]
Seed = Annotated[int | None, Opt("--seed", help="Run seed: each input's noise seed derives "
                                 "from it and the input's id.")]
MaxTokens = Annotated[int | None, Opt("--max-tokens", help="Largest token budget of the "
                                      "reported region.")]
Boundary = Annotated[str | None, Opt("--boundary", help="Sequential boundary: mixture (per "
                                     "draw), looks (long runs) or spending (decision mode: "
                                     "exact, cheapest for tables).")]
Price = Annotated[float | None, Opt("--price", help="Decision mode with many targets: draws one "
                                    "target is worth; targets projected to cost more than "
                                    "they are worth are given up (docs/SEQUENTIAL.md).")]
Targets = Annotated[list[str] | None, Opt("--target", help="Target region EPS,R or "
                                          "BLOCK=SIZE,... (repeatable).")]
Device = Annotated[str, Opt("--device", help="cpu, cuda or cuda:N.")]


def column_map(columns: str | None, image_column: str | None,
               text_column: str | None) -> dict[str, str] | None:
    """``--columns`` with ``--image-column`` / ``--text-column`` folded in (they win)."""
    from hybridcert.runs.config import parse_mapping

    out = parse_mapping("--columns", columns) if columns else None
    if image_column or text_column:
        out = dict(out or {})
        if image_column:
            out["image"] = image_column
        if text_column:
            out["text"] = text_column
    return out


def parse_label_map(value: str | None) -> dict[str, int] | None:
    from hybridcert.runs.config import parse_mapping

    return parse_mapping("--label-map", value, int) if value else None


def parse_size(value: str | None) -> list[int] | None:
    """``--image-size 224`` or ``224x224``."""
    from hybridcert.runs.config import parse_image_size

    return None if value is None else parse_image_size(value)


def parse_model_args(values: list[str] | None) -> dict | None:
    """``--model-arg KEY=VALUE`` (repeatable) -> {key: value}."""
    from hybridcert.runs.config import parse_model_args as parse

    return parse(values)


def parse_blocks(values: list[str] | None) -> dict[str, str] | None:
    """``--block NAME=SPEC`` (repeatable) -> {name: spec}."""
    from hybridcert.runs.config import ConfigError

    if not values:
        return None
    out = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ConfigError(f"--block must look like NAME=gaussian:0.25 (or substitution:A, "
                              f"mask:A, none), got {value!r}")
        out[name.strip()] = spec.strip()
    return out


def parse_targets(values: list[str] | None) -> list | None:
    from hybridcert.runs.config import parse_target

    return [parse_target(t) for t in values] if values else None
