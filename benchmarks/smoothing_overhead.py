"""Cost of the smoothing machinery over the raw forward pass (small CNN + text model, CPU).

Certify throughput (noisy samples/s: noise drawing, id mapping, batching, counting) against
the same model's forward pass on pre-made inputs of the same batch size, in one process.

    python benchmarks/smoothing_overhead.py [--batch-size 256] [--samples 20000]
                                            [--model small|safety]

``small``: a two-layer CNN + EmbeddingBag; ``safety``: the benchmark's SafetyFilter (CNN
16/32/64 with batch norm + frozen MiniLM token embeddings + MLPs), untrained weights.
"""

from __future__ import annotations

import argparse
import time

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
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model == "safety":
        from hybridcert.models.fusion import FilterConfig, SafetyFilter

        model = SafetyFilter(FilterConfig()).eval()
    else:
        model = ImageText().eval()
    vocab = Vocabulary(torch.arange(999, 30522))
    noises = {"image": Gaussian(0.25), "text": Substitution(0.1, vocab.size)}
    clf = SmoothedClassifier(model, noises, 2, {"text": vocab}, batch_size=args.batch_size)
    serial = SmoothedClassifier(model, noises, 2, {"text": vocab}, batch_size=args.batch_size,
                                prefetch=False)
    record = {"image": torch.rand(3, 32, 32),
              "text": TokenBlock(torch.tensor([101] + list(range(2000, 2030)) + [102]))}
    premade = clf.noisy_copies(clf.validate(record), args.batch_size, seed=0)
    batches = args.samples // args.batch_size
    torch.set_num_threads(torch.get_num_threads())
    for _ in range(3):
        clf.sample_counts(clf.validate(record), args.batch_size, 0, 0)
    timings = {"raw": [], "smoothed": [], "serial": []}
    for repeat in range(3):
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(batches):
                model(premade).argmax(1)
        timings["raw"].append(time.perf_counter() - start)
        start = time.perf_counter()
        clf.sample_counts(clf.validate(record), batches * args.batch_size, repeat, 1)
        timings["smoothed"].append(time.perf_counter() - start)
        start = time.perf_counter()
        serial.sample_counts(clf.validate(record), batches * args.batch_size, repeat, 1)
        timings["serial"].append(time.perf_counter() - start)
    raw, smooth, plain = (min(timings[k]) for k in ("raw", "smoothed", "serial"))
    total = batches * args.batch_size
    print(f"{args.model} model, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, "
          f"{total} samples, best of 3")
    print(f"raw forward:      {total / raw:,.0f} samples/s")
    print(f"smoothed certify: {total / smooth:,.0f} samples/s "
          f"(overhead {100 * (smooth / raw - 1):.1f}%)")
    print(f"without prefetch: {total / plain:,.0f} samples/s "
          f"(overhead {100 * (plain / raw - 1):.1f}%)")


if __name__ == "__main__":
    main()
