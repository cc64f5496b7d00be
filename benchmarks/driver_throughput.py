"""How far the sequential driver is from the physical floor: decisions/s and draws/s of the
driver with a zero-cost model (one-pixel logits) at 1, 32 and 256 concurrent decisions,
beside the rate at which this process draws the same noise alone (``torch.randn`` for the
image plus the token draws for a batch of 256 copies).  The ratio (driver draws/s over raw
noise draws/s) is measured in one process, so it is comparable across loads of the machine.

Setup (issue 23): 48x48x3 image (sigma 0.25), 16 tokens (substitution, keep 0.8), a model
whose unsafe logit is pixel 0 of the noisy image minus 0.5, the pixel at 0.70 so
P(unsafe) ~ 0.79; the service's decision rule (targets (0, 0), (0.1, 0), (0, 1), (0.1, 1),
alpha 0.001, cap 10,000).

Usage::

    python benchmarks/driver_throughput.py                      # this checkout
    python benchmarks/driver_throughput.py --src OLD/src        # another checkout's code
    python benchmarks/driver_throughput.py --compare OLD/src    # both, in turn, one log
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZE, TOKENS, SIGMA, KEEP, PIXEL = 48, 16, 0.25, 0.8, 0.70
TARGETS = [[0.0, 0], [0.1, 0], [0.0, 1], [0.1, 1]]


def setup():
    import torch

    from hybridcert.blocks import Continuous, HybridNoise, TokenBlock, Tokens, Vocabulary
    from hybridcert.noise import Gaussian, Substitution
    from hybridcert.smoothing import SmoothedClassifier
    from hybridcert.smoothing.sequential import SequentialQuestion

    class OnePixel(torch.nn.Module):
        def forward(self, batch):
            score = batch["image"][:, 0, 0, 0] - 0.5
            return torch.stack([-score, score], 1)

    vocab = Vocabulary(torch.arange(10, 1010))
    noise = HybridNoise([Continuous("image", Gaussian(SIGMA)),
                         Tokens("text", Substitution(KEEP, vocab.size), vocab)])
    clf = SmoothedClassifier(OnePixel(), noise, 2, batch_size=256)
    question = SequentialQuestion(noise, 2, 0.001, 10_000, targets=[tuple(t) for t in TARGETS])
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, SIZE, SIZE, generator=g)
    image[0, 0, 0] = PIXEL
    ids = torch.randint(10, 1010, (TOKENS,), generator=g)
    record = clf.validate({"image": image, "text": TokenBlock(ids)})
    return clf, question, record, vocab


def raw_noise_rate(vocab, seconds: float = 2.0, rows: int = 256) -> float:
    """Copies/s of the same noise drawn alone: randn for the image, the substitution's keep
    draw and replacement ids for the tokens, ``rows`` copies per call."""
    import torch

    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, SIZE, SIZE)
    ids = torch.randint(0, 1000, (TOKENS,))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        noisy = torch.empty(rows, 3, SIZE, SIZE).normal_(0.0, SIGMA, generator=g).add_(image)
        change = torch.rand(rows, TOKENS, generator=g) >= KEEP
        offset = torch.randint(1, vocab.size, (rows, TOKENS), generator=g)
        torch.where(change, (ids + offset) % vocab.size, ids)
        del noisy
        done += rows
    return done / (time.perf_counter() - start)


def driver_rate(clf, question, record, concurrent: int, seconds: float) -> tuple[float, float]:
    """(decisions/s, draws/s) with ``concurrent`` decisions kept in flight."""
    try:
        from hybridcert.sequential.driver import Driver as Engine
    except ImportError:                                   # the code before issue 23
        from hybridcert.serve.engine import BatchingEngine as Engine
    engine = Engine(clf, batch_size=256, max_pending=concurrent).start()
    seed, decided, drawn = 0, 0, 0
    running = []
    start = time.perf_counter()
    try:
        while True:
            while len(running) < concurrent:
                running.append(engine.submit(record, seed, question.new_rule(), 600.0))
                seed += 1
            job = running.pop(0)
            outcome = job.future.result()
            decided += 1
            drawn += outcome.drawn
            if time.perf_counter() - start >= seconds and decided >= concurrent:
                break
        elapsed = time.perf_counter() - start
    finally:
        engine.close(drain=False)
    return decided / elapsed, drawn / elapsed


def measure(seconds: float) -> dict:
    import torch

    torch.set_grad_enabled(False)
    clf, question, record, vocab = setup()
    out = {"load_before": os.getloadavg()[0], "raw_noise": raw_noise_rate(vocab), "rows": []}
    for concurrent in (1, 32, 256):
        decisions, draws = driver_rate(clf, question, record, concurrent, seconds)
        out["rows"].append({"concurrent": concurrent, "decisions_s": decisions,
                            "draws_s": draws})
    out["raw_noise_after"] = raw_noise_rate(vocab)
    out["load_after"] = os.getloadavg()[0]
    return out


def report(label: str, data: dict) -> str:
    raw = (data["raw_noise"] + data["raw_noise_after"]) / 2
    lines = [f"{label}: raw noise {raw:,.0f} copies/s (before {data['raw_noise']:,.0f}, after "
             f"{data['raw_noise_after']:,.0f}); load average {data['load_before']:.2f} -> "
             f"{data['load_after']:.2f}"]
    for row in data["rows"]:
        lines.append(f"  {row['concurrent']:>4} concurrent: {row['decisions_s']:8.1f} decisions/s "
                     f"{row['draws_s']:10,.0f} draws/s  = {row['draws_s'] / raw:6.1%} of raw noise")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per concurrency level")
    parser.add_argument("--src", help="run another checkout's src/ (in a subprocess)")
    parser.add_argument("--compare", help="also run this src/ (before) and print both")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.seconds)))
        return
    runs = [("before", args.compare)] if args.compare else []
    runs.append(("this checkout" if not args.src else args.src,
                 args.src or str(Path(__file__).resolve().parents[1] / "src")))
    for label, src in runs:
        env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
        out = subprocess.run([sys.executable, __file__, "--json", "--seconds",
                              str(args.seconds)], env=env, check=True, capture_output=True,
                             text=True).stdout
        print(report(f"{label} ({src})", json.loads(out.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
