"""``hybridcert attack``: attack a stored run's certified inputs inside and beyond their
certified regions (see :mod:`hybridcert.runs.attack`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybridcert.cli.options import Device

Opt = typer.Option

#: Exit code when an attack flipped a decision inside its certified region.
ALARM_EXIT = 3


def attack(
    store: Annotated[Path, Opt("--store", help="SQLite file of a certified run (its last "
                               "run is attacked; results are written into it).")],
    inside: Annotated[bool, Opt("--inside", help="Attack at a budget inside each certified "
                                "region: a flip found is a soundness alarm (exit 3).")]
    = False,
    beyond: Annotated[float | None, Opt("--beyond", metavar="FACTOR", help="Attack at the "
                                        "certified budget scaled by FACTOR > 1 (L2 and "
                                        "tokens).")] = None,
    tokens: Annotated[int, Opt("--tokens", help="Token budget: R changed tokens, at most the "
                               "input's largest certified R, with the L2 radius certified "
                               "there.")] = 1,
    samples: Annotated[int, Opt("--samples", help="Noisy copies per evaluation of the "
                                "adaptive attack.")] = 32,
    steps: Annotated[int, Opt("--steps", help="PGD steps on the image.")] = 20,
    candidates: Annotated[int, Opt("--candidates", help="Token substitutions scored per "
                                   "round.")] = 16,
    n: Annotated[int, Opt("--n", help="Fresh noise draws for each estimate (before and after "
                          "the attack).")] = 1000,
    alpha: Annotated[float | None, Opt("--alpha", help="Level of the Clopper-Pearson bounds "
                                       "(default: the run's alpha).")] = None,
    seed: Annotated[int, Opt("--seed", help="Seed of the attack and of the fresh draws.")] = 0,
    limit: Annotated[int | None, Opt("--limit", help="Only the first N certified inputs.")]
    = None,
    device: Device = "cpu",
    batch_size: Annotated[int, Opt("--batch-size")] = 512,
    quiet: Annotated[bool, Opt("--quiet", help="No per-input lines.")] = False,
) -> None:
    """Attack every certified input of a stored run with the joint attack (PGD on the image
    and token substitution, adaptive to the noise), inside and/or beyond its certified region;
    results go into the store and `hybridcert report`.

    It loads the run's --model: that code runs in this process.
    """
    from hybridcert.runs.attack import AttackOptions, attack_store, check_kinds

    kinds = check_kinds(inside, beyond)
    options = AttackOptions(tokens=tokens, samples=samples, steps=steps,
                            candidates=candidates, n=n, alpha=alpha, seed=seed, limit=limit)
    if batch_size < 1:
        from hybridcert.runs.config import ConfigError

        raise ConfigError(f"--batch-size must be an integer >= 1, got {batch_size}")

    def show(row: dict) -> None:
        if not quiet:
            typer.echo(describe(row))

    rows, skipped = attack_store(store, kinds, options, device, batch_size, on_row=show)
    if skipped:
        shown = ", ".join(repr(s) for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        typer.echo(f"{len(skipped)} certified input(s) not attacked: missing from the dataset "
                   f"or changed since they were certified ({shown})", err=True)
    for kind, factor in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        flipped = sum(r["outcome"] == "flipped" for r in mine)
        held = sum(r["outcome"] == "held" for r in mine)
        typer.echo(f"attack {kind}{'' if kind == 'inside' else f' x{factor:g}'}: "
                   f"{len(mine)} certified input(s) attacked, {flipped} flipped, {held} held, "
                   f"{len(mine) - flipped - held} undecided; results in {store}", err=True)
    alarms = [r for r in rows if r["alarm"]]
    if alarms:
        ids = ", ".join(repr(r["id"]) for r in alarms[:5]) + (" ..." if len(alarms) > 5
                                                              else "")
        typer.echo(f"hybridcert: SOUNDNESS ALARM: the attack flipped {len(alarms)} decision(s) "
                   f"INSIDE their certified regions ({ids}): a certificate claimed more than "
                   f"holds (or a bound failed, probability <= alpha each). Please report it "
                   f"with the store.", err=True)
        raise typer.Exit(ALARM_EXIT)


def describe(row: dict) -> str:
    """One line per attacked input."""
    budget = ", ".join(f"{k} L2 {v:.3g}" if isinstance(v, float) else f"{k} {v} token(s)"
                       for k, v in row["budget"].items())
    kind = row["kind"] if row["kind"] == "inside" else f"beyond x{row['factor']:g}"
    line = (f"{row['id']}: {kind} ({budget}): {row['quantity']} {row['estimate_before']:.3f} "
            f"[{row['lower_before']:.3f}, {row['upper_before']:.3f}] -> "
            f"{row['estimate_after']:.3f} [{row['lower_after']:.3f}, {row['upper_after']:.3f}]"
            f", {row['tokens_changed']} token(s) changed, L2 {row['l2_used']:.3g} used: "
            f"{row['outcome']}")
    return ("SOUNDNESS ALARM " + line) if row["alarm"] else line
