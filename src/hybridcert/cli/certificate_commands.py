"""``hybridcert bound`` and ``hybridcert radius``: the certificate from the shell.

Their ``--json`` output is a contract other tools read: keep the keys.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hybridcert.certificate import (
    certified_frontier,
    lower_bound,
    per_modality_check,
    sequential_bound,
)
from hybridcert.noise import Gaussian, LikelihoodRatio, Mask, Substitution


class NoiseKind(str, Enum):
    substitution = "substitution"
    mask = "mask"


PLower = Annotated[float, typer.Option("--p-lower", help="Lower bound on pA, in [0, 1].")]
Sigma = Annotated[float | None, typer.Option("--sigma", help="Gaussian noise level (> 0).")]
KeepProb = Annotated[float | None, typer.Option("--keep-prob", help="Token keep probability a.")]
VocabSize = Annotated[int | None, typer.Option("--vocab-size", help="Noisable vocabulary V.")]
NoiseOpt = Annotated[NoiseKind, typer.Option("--noise", help="Discrete noise type.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def discrete_noise(noise: NoiseKind, keep_prob: float | None, vocab_size: int | None):
    """The discrete noise named on the command line, or None when none is given."""
    if keep_prob is None:
        if vocab_size is not None:
            raise ValueError("--keep-prob is required with --vocab-size")
        return None
    if noise is NoiseKind.mask:
        return Mask(keep_prob)
    if vocab_size is None:
        raise ValueError("--vocab-size is required for --noise substitution")
    return Substitution(keep_prob, vocab_size)


def bound(
    p_lower: PLower,
    sigma: Sigma = None,
    l2: Annotated[float, typer.Option("--l2", help="L2 radius of the image change (>= 0).")] = 0.0,
    tokens: Annotated[int, typer.Option("--tokens", help="Substituted tokens r (>= 0).")] = 0,
    keep_prob: KeepProb = None,
    vocab_size: VocabSize = None,
    noise: NoiseOpt = NoiseKind.substitution,
    as_json: JsonOpt = False,
) -> None:
    """Worst-case probability of the top class under a joint (L2, tokens) change."""
    if l2 < 0:
        raise ValueError(f"--l2 must be >= 0, got {l2!r}")
    if tokens < 0:
        raise ValueError(f"--tokens must be >= 0, got {tokens!r}")
    if l2 > 0 and sigma is None:
        raise ValueError("--sigma is required when --l2 > 0")
    continuous = (Gaussian(sigma).likelihood_ratio(l2) if sigma is not None
                  else LikelihoodRatio.identity())
    discrete = discrete_noise(noise, keep_prob, vocab_size)
    if tokens > 0 and discrete is None:
        raise ValueError("--keep-prob (and --vocab-size for substitution) is required "
                         "when --tokens > 0")
    changed = discrete.likelihood_ratio(tokens) if discrete else LikelihoodRatio.identity()
    joint = lower_bound(p_lower, continuous * changed)
    result = {
        "p_lower": p_lower,
        "sigma": sigma,
        "l2": l2,
        "tokens": tokens,
        "noise": noise.value,
        "keep_prob": keep_prob,
        "vocab_size": vocab_size,
        "lower_bound": joint,
        "sequential_bound": sequential_bound(p_lower, continuous, changed),
        "continuous_only_bound": lower_bound(p_lower, continuous),
        "discrete_only_bound": lower_bound(p_lower, changed),
        "certified": joint > 0.5,
        "per_modality_certified_unsound": per_modality_check(p_lower, continuous, changed),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"Worst case at L2 {l2:g} and {tokens} token(s), pA >= {p_lower:g}")
    table.add_column("bound")
    table.add_column("value", justify="right")
    for key in ("lower_bound", "sequential_bound", "continuous_only_bound",
                "discrete_only_bound"):
        table.add_row(key.replace("_", " "), f"{result[key]:.10f}")
    table.add_row("certified (two classes)", str(result["certified"]))
    Console().print(table)


def radius(
    p_lower: PLower,
    sigma: Sigma = None,
    keep_prob: KeepProb = None,
    vocab_size: VocabSize = None,
    noise: NoiseOpt = NoiseKind.substitution,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens",
                                                   help="Largest r to explore.")] = None,
    p_upper: Annotated[float | None, typer.Option("--p-upper",
                                                  help="Upper bound on pB.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Certified frontier: the largest L2 radius for each number of substituted tokens."""
    discrete = discrete_noise(noise, keep_prob, vocab_size)
    frontier = certified_frontier(p_lower, sigma=sigma, discrete=discrete, p_upper=p_upper,
                                  max_tokens=max_tokens)
    rows = frontier.rows(0)
    result = {"max_tokens": int(frontier.max_tokens[0]), "frontier": rows}
    if as_json:
        typer.echo(json.dumps(result))
        return
    if not rows:
        Console().print("Not certified: lower(pA) <= upper(pB) even with no change.")
        return
    table = Table(title=f"Certified region for pA >= {p_lower:g}")
    table.add_column("tokens r", justify="right")
    table.add_column("L2 radius", justify="right")
    for row in rows:
        table.add_row(str(row["tokens"]), f"{row['l2_radius']:.6f}")
    Console().print(table)
