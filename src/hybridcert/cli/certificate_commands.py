"""``hybridcert bound`` and ``hybridcert radius``: the certificate from the shell.

Their ``--json`` output is a contract other tools read: keep the keys.  JSON is written with
``allow_nan=False``; an unbounded L2 radius (every radius certified, e.g. ``pA = 1``) is
written as ``null``.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hybridcert.certificate import (
    Rule,
    certified_frontier,
    is_certified,
    lower_bound,
    per_modality_check,
    sequential_bound,
    upper_bound,
)
from hybridcert.noise import NOISES, Gaussian, LikelihoodRatio

#: The token noises of the registry (``--noise``).
NoiseKind = Enum("NoiseKind", {name: name for name, cls in NOISES.items()
                               if cls.kind == "discrete"}, type=str)


class Side(str, Enum):
    flag = "flag"
    benign = "benign"


PLower = Annotated[float | None, typer.Option(
    "--p-lower", help="Lower confidence bound, in [0, 1]: on pA, or with --threshold on the "
                      "flagged class (required unless --side benign).")]
Sigma = Annotated[float | None, typer.Option("--sigma", help="Gaussian noise level (> 0).")]
KeepProb = Annotated[float | None, typer.Option("--keep-prob", help="Token keep probability a.")]
VocabSize = Annotated[int | None, typer.Option("--vocab-size", help="Noisable vocabulary V.")]
NoiseOpt = Annotated[NoiseKind, typer.Option("--noise", help="Discrete noise type.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Threshold = Annotated[float | None, typer.Option(
    "--threshold", help="Detector threshold tau in (0, 1): certify a thresholded detector "
                        "(flag iff P(class) >= tau) instead of the majority vote.")]
SideOpt = Annotated[Side | None, typer.Option(
    "--side", help="With --threshold: 'flag' (default; the flag persists: lower(--p-lower) "
                   ">= tau) or 'benign' (no flag can be forced: upper(--p-upper) < tau, "
                   "--p-upper an UPPER confidence bound on the flagged class).")]


def discrete_noise(noise: NoiseKind, keep_prob: float | None, vocab_size: int | None):
    """The discrete noise named on the command line, or None when none is given."""
    if keep_prob is None:
        if vocab_size is not None:
            raise ValueError("--keep-prob is required with --vocab-size")
        return None
    try:
        return NOISES[noise.value].build(keep_prob, vocab_size)
    except ValueError as err:
        if vocab_size is None and "vocab_size" in str(err):
            raise ValueError(f"--vocab-size is required for --noise {noise.value}") from None
        raise


def _rule(threshold: float | None, side: Side | None) -> Rule | None:
    """The detector rule asked for, or None for the majority vote."""
    if threshold is None:
        if side is not None:
            raise ValueError("--side needs --threshold")
        return None
    if not (0.0 < threshold < 1.0):
        raise ValueError(f"--threshold must lie in (0, 1), got {threshold!r}")
    return Rule.benign(threshold) if side is Side.benign else Rule.flag(threshold)


def _bound_arg(rule: Rule | None, p_lower: float | None, p_upper: float | None,
               command: str) -> float:
    """The confidence bound the rule reads, with one-line errors for the others."""
    if rule is not None and rule.reads_upper:
        if p_upper is None:
            raise ValueError("--side benign reads --p-upper (an upper confidence bound on the "
                             "flagged class)")
        if p_lower is not None:
            raise ValueError("--side benign reads --p-upper, not --p-lower")
        return p_upper
    if p_lower is None:
        raise ValueError("--p-lower is required" + ("" if command == "radius" or rule is None
                                                      else " (or use --side benign)"))
    if p_upper is not None and (rule is not None or command == "bound"):
        raise ValueError("--p-upper is read only by the majority vote of radius (runner-up) "
                         "and by --side benign")
    return p_lower


def json_number(value: float) -> float | None:
    """A finite float as is; ``inf`` (unbounded radius) as None, i.e. JSON null."""
    return None if math.isinf(value) else value


def _emit(result: dict) -> None:
    typer.echo(json.dumps(result, allow_nan=False))


def bound(
    p_lower: PLower = None,
    sigma: Sigma = None,
    l2: Annotated[float, typer.Option("--l2", help="L2 radius of the image change (>= 0).")] = 0.0,
    tokens: Annotated[int, typer.Option("--tokens", help="Substituted tokens r (>= 0).")] = 0,
    keep_prob: KeepProb = None,
    vocab_size: VocabSize = None,
    noise: NoiseOpt = NoiseKind.substitution,
    threshold: Threshold = None,
    side: SideOpt = None,
    p_upper: Annotated[float | None, typer.Option(
        "--p-upper", help="With --side benign: upper confidence bound on the flagged class.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Worst-case probability of the top (or flagged) class under a joint (L2, tokens)
    change.  "certified" is the claim of the rule asked for: two classes (lower > 1/2), or
    with --threshold the detector's flag (lower >= tau; --side benign: upper < tau).

    The rows (majority vote and --side flag), at --l2 and --tokens:
    lower bound: the joint certificate (what certify reports), the worst case
      when the image moves by --l2 and --tokens tokens change at once;
    sequential bound: the two one-modality bounds composed (tokens then image,
      or image then tokens, the better one): sound for the joint change too,
      never above the joint bound;
    continuous only bound: the worst case when only the image changes;
    discrete only bound: the worst case when only the tokens change.
    The last two do not cover the joint change: both above 1/2 does not
    certify it (per_modality_certified_unsound in --json)."""
    rule = _rule(threshold, side)
    p = _bound_arg(rule, p_lower, p_upper, "bound")
    if not (0.0 <= p <= 1.0):
        name = "--p-upper" if rule is not None and rule.reads_upper else "--p-lower"
        raise ValueError(f"{name} must lie in [0, 1], got {p!r}")
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
    joint = continuous * changed
    setting = {"sigma": sigma, "l2": l2, "tokens": tokens, "noise": noise.value,
               "keep_prob": keep_prob, "vocab_size": vocab_size}
    if rule is not None and rule.reads_upper:
        benign = bool(is_certified(p, joint, rule=rule)[0])
        result = {"p_upper": p, **setting, "threshold": rule.tau, "side": "benign",
                  "upper_bound": upper_bound(p, joint), "benign_certified": benign,
                  "certified": benign}
        keys, verdict = ("upper_bound",), ("certified (cannot be flagged)", "benign_certified")
    else:
        value = lower_bound(p, joint)
        result = {
            "p_lower": p,
            **setting,
            "lower_bound": value,
            "sequential_bound": sequential_bound(p, continuous, changed),
            "continuous_only_bound": lower_bound(p, continuous),
            "discrete_only_bound": lower_bound(p, changed),
            "certified": value > 0.5,
            "per_modality_certified_unsound": per_modality_check(p, continuous, changed),
        }
        keys = ("lower_bound", "sequential_bound", "continuous_only_bound",
                "discrete_only_bound")
        verdict = ("certified (two classes)", "certified")
        if rule is not None:
            # "certified" is the claim of the rule asked for: here the detector's flag.
            flag = bool(is_certified(p, joint, rule=rule)[0])
            result.update({"threshold": rule.tau, "side": "flag", "flag_certified": flag,
                           "certified": flag,
                           "per_modality_certified_unsound": bool(
                               is_certified(p, continuous, rule=rule)[0]
                               and is_certified(p, changed, rule=rule)[0])})
            verdict = ("flag certified (lower >= tau)", "flag_certified")
    if as_json:
        _emit(result)
        return
    name = "pc <=" if rule is not None and rule.reads_upper else \
        ("pc >=" if rule is not None else "pA >=")
    table = Table(title=f"Worst case at L2 {l2:g} and {tokens} token(s), {name} {p:g}")
    table.add_column("bound")
    table.add_column("value", justify="right")
    for key in keys:
        table.add_row(key.replace("_", " "), f"{result[key]:.10g}")
    if rule is not None:
        table.add_row("threshold tau", f"{rule.tau:g}")
    table.add_row(verdict[0], str(result[verdict[1]]))
    Console().print(table)


def radius(
    p_lower: PLower = None,
    sigma: Sigma = None,
    keep_prob: KeepProb = None,
    vocab_size: VocabSize = None,
    noise: NoiseOpt = NoiseKind.substitution,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", help="Largest r to explore (default 1000, at most 10000).")] = None,
    p_upper: Annotated[float | None, typer.Option(
        "--p-upper", help="Majority vote: upper bound on the runner-up pB (default 1 - pA). "
                          "With --side benign: upper confidence bound on the flagged class.")
    ] = None,
    threshold: Threshold = None,
    side: SideOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Certified frontier: the largest L2 radius for each number of substituted tokens.

    --json prints {"max_tokens": r_max (-1 if nothing is certified), "frontier": [{"tokens":
    r, "l2_radius": eps}, ...]}; "l2_radius" is null where every L2 radius is certified
    (e.g. --p-lower 1, or --p-upper 0 with substitution noise).
    """
    rule = _rule(threshold, side)
    p = _bound_arg(rule, p_lower, p_upper, "radius")
    runner_up = p_upper if rule is None else None
    discrete = discrete_noise(noise, keep_prob, vocab_size)
    frontier = certified_frontier(p, sigma=sigma, discrete=discrete, p_upper=runner_up,
                                  max_tokens=max_tokens, rule=rule)
    rows = [{"tokens": row["tokens"], "l2_radius": json_number(row["l2_radius"])}
            for row in frontier.rows(0)]
    result = {"max_tokens": int(frontier.max_tokens[0]), "frontier": rows}
    if as_json:
        _emit(result)
        return
    if not rows:
        what = {None: "lower(pA) <= upper(pB)", "flag": "lower(pc) < tau",
                "benign": "upper(pc) >= tau"}[None if rule is None else rule.kind]
        Console().print(f"Not certified: {what} even with no change.")
        return
    if rule is None:
        title = f"pA >= {p:g}"
    elif rule.kind == "flag":
        title = f"flag kept, pc >= {p:g}, tau {rule.tau:g}"
    else:
        title = f"no flag, pc <= {p:g}, tau {rule.tau:g}"
    table = Table(title=f"Certified region ({title})")
    table.add_column("tokens r", justify="right")
    table.add_column("L2 radius", justify="right")
    for row in rows:
        eps = row["l2_radius"]
        table.add_row(str(row["tokens"]), "unbounded" if eps is None else f"{eps:.6f}")
    Console().print(table)
    asked = max_tokens if max_tokens is not None else 1000
    last = rows[-1]["tokens"]
    if discrete is not None and last < asked:
        typer.echo(_why_stop(p, discrete, last + 1, runner_up, rule, asked))


def _why_stop(p: float, discrete, tokens: int, runner_up: float | None, rule: Rule | None,
              asked: int) -> str:
    """Why the frontier ends before --max-tokens: the worst case at one more changed token
    breaks the rule even with no L2 change."""
    ratio = discrete.likelihood_ratio(tokens)
    head = f"Stops at r = {tokens - 1} (--max-tokens {asked}): with {tokens} changed tokens"
    if rule is None:
        low = float(lower_bound(p, ratio))
        high = float(upper_bound(1 - p if runner_up is None else runner_up, ratio))
        return (f"{head} the worst case leaves pA >= {low:.4g}, not above the runner-up's "
                f"worst case {high:.4g}, even with no L2 change.")
    if rule.kind == "flag":
        return (f"{head} the worst case leaves pc >= {float(lower_bound(p, ratio)):.4g}, "
                f"below tau {rule.tau:g}, even with no L2 change.")
    return (f"{head} the worst case allows pc up to {float(upper_bound(p, ratio)):.4g}, "
            f"not below tau {rule.tau:g}, even with no L2 change.")
