"""Cost of the smoothing machinery over the raw forward pass (small CNN + text model, CPU).

Certify throughput (noisy samples/s: noise drawing, id mapping, batching, counting) against
the same model's forward pass on pre-made inputs of the same batch size (8 distinct batches
in turn), in one process, repeats interleaved.  Two CPU layouts of the raw forward pass are
timed: torch's default (one batch at a time, split across the cores) and whole batches side
by side (one single-threaded batch per core) — the like-for-like baseline of
``SmoothedClassifier(parallel_batches=...)``.

    python benchmarks/smoothing_overhead.py [--batch-size 256] [--samples 20000]
                                            [--model small|safety] [--repeats 5]

``small``: a two-layer CNN + EmbeddingBag; ``safety``: the benchmark's SafetyFilter (CNN
16/32/64 with batch norm + frozen MiniLM token embeddings + MLPs), untrained weights.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from hybridcert import Gaussian, Substitution
from hybridcert.smoothing import SmoothedClassifier, TokenBlock, Vocabulary


class ImageText(nn.Module):
    def __init__(self, vocab: int = 30522):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.EmbeddingBag(vocab, 64)
        self.head = nn.Linear(32 + 64, 2)

    def forward(self, batch):
        return self.head(torch.cat([self.cnn(batch["image"]), self.embed(batch["text"])], 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--model", choices=("small", "safety"), default="small")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model == "safety":
        from hybridcert.models.fusion import FilterConfig, SafetyFilter

        model = SafetyFilter(FilterConfig()).eval()
    else:
        model = ImageText().eval()
    vocab = Vocabulary(torch.arange(999, 30522))
    noises = {"image": Gaussian(0.25), "text": Substitution(0.1, vocab.size)}
    cores = torch.get_num_threads()

    def smoothed(**options):
        return SmoothedClassifier(model, noises, 2, {"text": vocab},
                                  batch_size=args.batch_size, **options)

    layouts = {"prefetch": smoothed(), "serial": smoothed(prefetch=False),
               "parallel": smoothed(parallel_batches=cores)}
    record = layouts["serial"].validate(
        {"image": torch.rand(3, 32, 32),
         "text": TokenBlock(torch.tensor([101] + list(range(2000, 2030)) + [102]))})
    # Distinct pre-made batches: one batch shared by every forward pass would sit in the
    # cache for all of them (and, on SMT siblings, for both threads), which fresh noisy
    # batches never do.
    premade = [layouts["serial"].noisy_copies(record, args.batch_size, seed=k)
               for k in range(8)]
    batches = args.samples // args.batch_size
    total = batches * args.batch_size

    def raw_split():      # one batch at a time, split across the cores (torch's default)
        with torch.no_grad():
            for k in range(batches):
                model(premade[k % len(premade)]).argmax(1)

    def raw_parallel():   # whole batches side by side, one single-threaded batch per core
        todo, lock = iter(range(batches)), threading.Lock()

        def work():
            torch.set_num_threads(1)
            with torch.no_grad():
                while True:
                    with lock:
                        k = next(todo, None)
                    if k is None:
                        return
                    model(premade[k % len(premade)]).argmax(1)
        with ThreadPoolExecutor(cores) as pool:
            for future in [pool.submit(work) for _ in range(cores)]:
                future.result()

    runs = {"raw": raw_split, "raw parallel": raw_parallel}
    for name, clf in layouts.items():
        runs[name] = lambda clf=clf: clf.sample_counts(record, total, 1, 1)
        clf.sample_counts(record, 3 * args.batch_size, 0, 0)    # warm-up
    timings = {name: [] for name in runs}
    for _ in range(args.repeats):                              # interleaved: drift hits all
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in timings.items()}
    print(f"{args.model} model, torch {torch.__version__}, {cores} threads, batch "
          f"{args.batch_size}, {total} samples, {args.repeats} interleaved repeats: best "
          f"throughput, median overhead of the repeats (each against its own baseline run)")

    def line(label, name, baseline):
        ratio = np.median(np.array(timings[name]) / np.array(timings[baseline]))
        print(f"{label:<40}{total / best[name]:>8,.0f} samples/s  (overhead "
              f"{100 * (ratio - 1):+.1f}% vs {baseline})")

    print(f"{'raw forward, batch split across cores':<40}{total / best['raw']:>8,.0f} samples/s")
    print(f"{'raw forward, batches side by side':<40}"
          f"{total / best['raw parallel']:>8,.0f} samples/s")
    line("smoothed, noise prefetched (default)", "prefetch", "raw")
    line("smoothed, no prefetch", "serial", "raw")
    line(f"smoothed, parallel_batches={cores}", "parallel", "raw")
    line("  the same, against batches side by side", "parallel", "raw parallel")

if __name__ == "__main__":
    main()
