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
    python benchmarks/driver_throughput.py --compare OLD/src    # both, alternating
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
    try:
        from hybridcert.sequential.question import SequentialQuestion
    except ImportError:                                   # the code before issue 23
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


def raw_noise_rate(vocab, seconds: float = 2.0, rows: int = 256) -> tuple[float, float]:
    """Copies per wall second and per CPU second of the same noise drawn alone: randn for
    the image, the substitution's change draw and replacement ids for the tokens, ``rows``
    copies per call."""
    import torch

    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, SIZE, SIZE)
    ids = torch.randint(0, 1000, (TOKENS,))
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        noisy = torch.empty(rows, 3, SIZE, SIZE).normal_(0.0, SIGMA, generator=g).add_(image)
        change = torch.rand(rows, TOKENS, generator=g) >= KEEP
        offset = torch.randint(1, vocab.size, (rows, TOKENS), generator=g)
        torch.where(change, (ids + offset) % vocab.size, ids)
        del noisy
        done += rows
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def driver_rate(clf, question, record, concurrent: int, seconds: float,
                warmup: float = 1.0) -> dict:
    """Steady state with ``concurrent`` decisions kept in flight (a finished one is replaced
    at once): decisions/s and rows/s over ``seconds`` after ``warmup`` seconds."""
    from concurrent.futures import FIRST_COMPLETED, wait

    try:
        from hybridcert.sequential.batched import fresh_copy
        from hybridcert.sequential.driver import Driver as Engine
    except ImportError:                                   # the code before issue 23
        from copy import deepcopy as fresh_copy

        from hybridcert.serve.engine import BatchingEngine as Engine
    prototype = question.new_rule()          # the service's way: copies of one prototype
    engine = Engine(clf, batch_size=256, max_pending=concurrent).start()
    seed = 0
    running = set()
    start = time.perf_counter()
    began = rows = decided = queries = None
    try:
        while True:
            while len(running) < concurrent:
                running.add(engine.submit(record, seed, fresh_copy(prototype), 600.0).future)
                seed += 1
            now = time.perf_counter()
            if began is None and now - start >= warmup:
                began, rows, decided, queries = now, engine.stats.rows, 0, 0
                cpu = time.process_time()
            elif began is not None and now - began >= seconds:
                break
            finished, running = wait(running, timeout=0.05, return_when=FIRST_COMPLETED)
            if began is not None:
                decided += len(finished)
                queries += sum(f.result().rule.queries for f in finished)
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu
        rows = engine.stats.rows - rows
    finally:
        engine.close(drain=False)
    return {"concurrent": concurrent, "decisions_s": decided / elapsed,
            "draws_s": rows / elapsed, "queries_s": queries / elapsed,
            "draws_cpu_s": rows / cpu}


def measure(seconds: float, threads: int) -> dict:
    import torch

    torch.set_grad_enabled(False)
    torch.set_num_threads(threads)
    clf, question, record, vocab = setup()
    out = {"threads": torch.get_num_threads(), "rows": []}
    for concurrent in (1, 32, 256):
        load = os.getloadavg()[0]
        before = raw_noise_rate(vocab, 1.5)
        row = driver_rate(clf, question, record, concurrent, seconds)
        after = raw_noise_rate(vocab, 1.5)
        row.update(raw=(before[0] + after[0]) / 2, raw_before=before[0], raw_after=after[0],
                   raw_cpu=(before[1] + after[1]) / 2, load=(load + os.getloadavg()[0]) / 2)
        out["rows"].append(row)
    return out


def report(label: str, data: dict) -> str:
    lines = [f"{label} ({data['threads']} torch threads):"]
    for row in data["rows"]:
        lines.append(
            f"  {row['concurrent']:>4} concurrent: {row['decisions_s']:7.1f} decisions/s "
            f"{row['draws_s']:8,.0f} draws/s, raw noise {row['raw']:8,.0f}/s (before "
            f"{row['raw_before']:,.0f}, after {row['raw_after']:,.0f}) = "
            f"{row['draws_s'] / row['raw']:6.1%} of raw noise; per CPU second "
            f"{row['draws_cpu_s']:,.0f} against {row['raw_cpu']:,.0f} = "
            f"{row['draws_cpu_s'] / row['raw_cpu']:6.1%}; load average {row['load']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per concurrency level")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: drawing noise from one "
                             "generator is serial, and the driver runs noise and model in "
                             "two threads of its own)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --compare: before and after alternate this many times")
    parser.add_argument("--src", help="run another checkout's src/ (in a subprocess)")
    parser.add_argument("--compare", help="also run this src/ (before), alternating")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.seconds, args.threads)))
        return
    mine = ("this checkout" if not args.src else args.src,
            args.src or str(Path(__file__).resolve().parents[1] / "src"))
    runs = ([("before", args.compare), mine] * args.rounds) if args.compare else [mine]
    print(f"driver_throughput: {SIZE}x{SIZE}x3 image, {TOKENS} tokens, P(unsafe) ~ 0.79, "
          f"zero-cost model, batch 256, {args.seconds:g} s per level, {os.cpu_count()} CPUs",
          flush=True)
    for label, src in runs:
        env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
        out = subprocess.run([sys.executable, __file__, "--json", "--seconds",
                              str(args.seconds), "--threads", str(args.threads)], env=env,
                             check=True, capture_output=True, text=True).stdout
        print(report(f"{label} ({src})", json.loads(out.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
