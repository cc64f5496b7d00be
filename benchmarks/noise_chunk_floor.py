"""Is ``driver_throughput.py``'s raw-noise baseline a floor for a sequential stream?  Per CPU
second, interleaved in one process: the baseline (256 copies per call from one generator)
against the same noise drawn as a stream draws it on a CPU (64-copy chunks, each from its
own seeded generator, through ``HybridNoise.sampler``).  Same setup as driver_throughput.py.

Usage::

    PYTHONPATH=src python benchmarks/noise_chunk_floor.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from driver_throughput import raw_noise_rate, setup


def chunk_rate(classifier, record, seconds: float = 1.5) -> float:
    """Copies per CPU second of 64-copy stream chunks of ``record``, each its own seed."""
    sampler = classifier.noise.sampler(record)
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        classifier.noisy_copies(record, 64, done, sampler)
        done += 1
    return 64 * done / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    classifier, _, record, vocab = setup()
    for _ in range(args.rounds):
        raw = raw_noise_rate(vocab, 1.5)[1]
        chunks = chunk_rate(classifier, record)
        print(f"raw {raw:,.0f}/CPU s   64-copy chunks {chunks:,.0f}/CPU s  ({chunks / raw:.0%})",
              flush=True)


if __name__ == "__main__":
    main()
