"""What keeping only the first pretrained MiniLM layer costs the benchmark's filter.

Trains the benchmark's image+text filter with 1 and with all 6 pretrained MiniLM layers under
the same recipe (the benchmark's data, 8 epochs, the noise of its first level: sigma 0.25,
keep 0.75, seed 0) and prints, for each, the training time, the forward rate at batch 128 and
clean / noisy / smoothed (16-copy majority) recall per class and balanced accuracy on the whole
test split.

    python benchmarks/layer_cost.py [--layers 1 6] [--epochs 8] [--cache artifacts] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hybridcert.bench.models import FastFilter
from hybridcert.datasets import safety
from hybridcert.models import fusion, training


def forward_rate(model: fusion.SafetyFilter, data: safety.SafetyData, batch: int = 128,
                 seconds: float = 3.0) -> float:
    fast = FastFilter(model)
    inputs = data.batch(np.arange(batch))
    with torch.no_grad():
        fast(inputs)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fast(inputs)
            done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("artifacts"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = safety.splits(6000, 1000, 1000, 0, args.cache / "data")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print("| layers | train s | forward samples/s (batch 128) | clean safe / unsafe / balanced "
          "| noisy | smoothed (16 copies) |")
    print("|---|---|---|---|---|---|")
    for layers in args.layers:
        config = fusion.FilterConfig(("image", "text"), text_layers=layers, sigma=0.25,
                                     keep_prob=0.75, seed=0)
        start = time.perf_counter()
        model = training.train(config, data["train"], epochs=args.epochs, log=lambda _: None)
        seconds = time.perf_counter() - start
        quality = training.evaluate(model, data["test"], votes=16, seed=0)
        cells = [f"{100 * quality[m]['safe']:.1f} / {100 * quality[m]['unsafe']:.1f} / "
                 f"{100 * quality[m]['balanced']:.1f}" for m in ("clean", "noisy", "smoothed")]
        print(f"| {layers} | {seconds:.0f} | {forward_rate(model, data['test']):,.0f} | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
