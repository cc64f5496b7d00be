"""Cost of the benchmark's attack (hybridcert.bench.attack_eval) per certified input.

Certifies ``--inputs`` unsafe test inputs of a trained safety filter (flag side, fixed n,
threshold ``--tau``) and attacks those certified flagged inside and beyond (x2) their regions
with the full run's settings (``AttackSettings()``: 100 PGD steps, 128 noisy copies, token
search), printing wall and process CPU seconds per input and kind.  The filter is the demo's
(trained once into ``--cache`` when absent: about a minute on 2 cores).

    python benchmarks/attack_cost.py [--cache artifacts] [--inputs 3] [--steps 100]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hybridcert.bench.attack_eval import AttackSettings, attack_unit
from hybridcert.bench.models import FastFilter
from hybridcert.bench.threats import CELLS, noise_for
from hybridcert.bench.units import Settings, certify_fixed, unit_rows
from hybridcert.blocks import TokenBlock
from hybridcert.datasets import safety
from hybridcert.models.checkpoints import RECIPE, demo_filter_config, load_or_train
from hybridcert.smoothing import SmoothedClassifier
from hybridcert.smoothing.core import input_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(RECIPE.cache))
    parser.add_argument("--level", type=float, nargs=2, default=(0.25, 0.25))
    parser.add_argument("--inputs", type=int, default=3)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--n", type=int, default=2000, help="draws of the certificate")
    parser.add_argument("--steps", type=int, default=AttackSettings.steps)
    parser.add_argument("--samples", type=int, default=AttackSettings.samples)
    parser.add_argument("--candidates", type=int, default=AttackSettings.candidates)
    args = parser.parse_args()
    cache = Path(args.cache)
    data = safety.splits(RECIPE.n_train, RECIPE.n_val, RECIPE.n_test, RECIPE.data_seed,
                         cache / "data")
    level = tuple(args.level)
    model, _ = load_or_train(cache, demo_filter_config(level), data["train"], RECIPE.epochs)
    test = data["test"]
    index = np.flatnonzero(test.labels == 1)[: args.inputs]
    noise = noise_for(level, "anywhere")
    clf = SmoothedClassifier(FastFilter(model), noise, 2, batch_size=128)
    ids = [f"test-{int(i):05d}" for i in index]
    records = [{"image": test.image(int(i)),
                "text": TokenBlock(torch.from_numpy(test.tokens[i]),
                                   attention=torch.from_numpy(test.attention[i]))}
               for i in index]
    settings = Settings(n_max=args.n, mode="fixed")
    unit = certify_fixed(clf, records, [input_seed(0, s) for s in ids], CELLS, settings,
                         args.tau, majority=False, baselines=False)
    stored = {"rows": unit_rows(unit, test.labels[index], ids),
              "calibration": {"tau": args.tau}, "level": list(level)}
    attack = replace(AttackSettings(), inputs=args.inputs, steps=args.steps,
                     samples=args.samples, candidates=args.candidates)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; level {level}, "
          f"tau {args.tau}; {attack}")
    cpu, wall = time.process_time(), time.perf_counter()
    out = attack_unit(model, noise, test, stored, attack, settings.alpha, 0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for row in out["rows"]:
        print(f"{row['id']} {row['kind']:7s} eps {row['budget']['image']:.3f} r "
              f"{row['budget']['text']}: {row['outcome']:9s} {row['time']:.1f} s")
    attacked = len(out["rows"])
    print(f"{out['available']} of {len(index)} inputs certified flagged; {attacked} attacks in "
          f"{wall:.0f} s wall, {cpu:.0f} s process CPU: {wall / max(attacked, 1):.1f} s wall "
          f"per input and kind")


if __name__ == "__main__":
    main()
