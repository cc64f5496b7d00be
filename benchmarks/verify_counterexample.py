"""Re-check the full benchmark's counterexample to the per-modality check with many fresh draws.

Reads the counterexample that ``make full-benchmark`` recorded (docs/benchmark/full/results.json),
re-runs the same attack on the same input with the same settings and seed, checks that the
perturbation stays inside the corner the per-modality check claimed (L2 on the image, tokens
changed), and draws ``--n`` fresh noisy copies from a seed the search never used: the smoothed
decision is flipped when the Clopper–Pearson upper bound at ``--alpha`` on the decided class stays
below 1/2.  Writes the adversarial image (float32, C x H x W in [0, 1]) and token ids beside the
results as ``counterexample_adversarial.npz``.

Usage::

    python benchmarks/verify_counterexample.py                 # 100,000 draws, alpha 0.001
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hybridcert.attacks import joint_attack
from hybridcert.bench.counterexample import candidate_setup
from hybridcert.bench.runner import full_config
from hybridcert.bench.store import load_unit
from hybridcert.blocks import TokenBlock
from hybridcert.datasets import safety
from hybridcert.models.checkpoints import load_or_train
from hybridcert.smoothing import Stage
from hybridcert.smoothing.core import input_seed, upper_confidence_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmark/full"))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args()
    cfg = full_config(args.out)
    if not (args.out / "results.json").is_file():
        raise SystemExit(f"--out: no results.json in {args.out} (run `make full-benchmark` "
                         f"first, or give its output folder)")
    if args.n < 1 or not 0 < args.alpha < 1:
        raise SystemExit(f"--n must be >= 1 and --alpha in (0, 1), got {args.n}, {args.alpha}")
    results = json.loads((args.out / "results.json").read_text())
    found = (results.get("counterexample") or {}).get("found")
    if not found:
        raise SystemExit(f"no counterexample recorded in {args.out / 'results.json'}")
    info = results["units"][found["unit"]]
    units_dir = cfg.cache / "bench" / args.out.name / cfg.signature()
    unit = load_unit(units_dir / f"{found['unit']}.json")
    if unit is None:
        raise SystemExit(f"the unit {found['unit']} is not cached under {units_dir}: run "
                         f"`make full-benchmark` on this machine first")
    k = unit["ids"].index(found["id"])
    data = safety.splits(cfg.n_train, cfg.n_val, cfg.n_test, cfg.data_seed, cfg.cache / "data")
    trained, _ = load_or_train(cfg.cache, cfg.filter_config(cfg.levels[info["level"]],
                                                           info["seed"]),
                               data["train"], cfg.epochs, log=lambda _: None)
    model, noise, clf, _, i = candidate_setup(cfg, {(info["seed"], info["level"]): trained},
                                         results, unit, found["unit"], k)
    test = data["test"]
    image = test.image(i)
    text = TokenBlock(torch.from_numpy(test.tokens[i]),
                      attention=torch.from_numpy(test.attention[i]))
    s = cfg.counterexample
    start = time.perf_counter()
    adv_image, adv_ids = joint_attack(
        model, image, text.ids, found["class"], found["eps"], found["r"], safety.vocabulary(),
        attention=text.attention, noise=noise, samples=s.samples, steps=s.steps,
        candidates=s.candidates, seed=k, image_first=True, rounds=s.rounds,
        common_noise=s.common_noise)
    change = float((adv_image - image).norm())
    changed = int((adv_ids != text.ids).sum())
    print(f"{found['id']} ({found['unit']}): attack re-run in "
          f"{time.perf_counter() - start:.0f} s; image change L2 {change:.4f} (claimed "
          f"corner {found['eps']:.4f}, recorded "
          f"{found['image_change']:.4f}); tokens changed {changed} (corner {found['r']}, "
          f"recorded {found['tokens_changed']})")
    tokenizer = safety.tokenizer()
    words = [tokenizer.id_to_token(int(t)) for t in adv_ids[text.attention.bool()]]
    print(f"adversarial tokens: {' '.join(words)} (recorded: "
          f"{' '.join(found['adversarial_tokens'])})")
    adversarial = clf.validate({"image": adv_image,
                                "text": TokenBlock(adv_ids, attention=text.attention)})
    start = time.perf_counter()
    counts = clf.sample_counts(adversarial, args.n,
                               input_seed(cfg.run_seed, f"{found['id']}/verify"),
                               Stage.ESTIMATION)
    hits = int(counts[found["class"]])
    upper = upper_confidence_bound(hits, args.n, args.alpha)
    inside = change <= found["eps"] + 1e-6 and changed <= found["r"]
    print(f"{args.n:,} fresh draws in {time.perf_counter() - start:.0f} s: class "
          f"{found['class']} in {hits:,} ({hits / args.n:.4f}); Clopper–Pearson upper bound at "
          f"alpha {args.alpha}: {upper:.4f} -> "
          + ("FLIPPED inside the claimed corner" if upper < 0.5 and inside else "not confirmed"))
    np.savez(args.out / "counterexample_adversarial.npz",
             image=adv_image.numpy().astype(np.float32), ids=adv_ids.numpy(),
             attention=text.attention.numpy())


if __name__ == "__main__":
    main()
