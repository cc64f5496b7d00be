"""``make demo``: the safety-filter benchmark at demo size (under 10 minutes on 2 CPU cores
from a fresh machine, less when the data and models are cached under artifacts/).

Torch uses at most ``HYBRIDCERT_THREADS`` threads (default: 2, or fewer cores), so a busy
machine is not oversubscribed."""

from __future__ import annotations

import os
import sys

import torch

from hybridcert.benchmark import BenchmarkConfig, run


def bound_threads() -> int:
    """Cap torch's intra-op threads (``HYBRIDCERT_THREADS``, default min(2, cores))."""
    raw = os.environ.get("HYBRIDCERT_THREADS", "")
    try:
        threads = int(raw) if raw else min(2, os.cpu_count() or 1)
    except ValueError:
        raise ValueError(f"HYBRIDCERT_THREADS must be a positive integer, got {raw!r}") from None
    if threads < 1:
        raise ValueError(f"HYBRIDCERT_THREADS must be a positive integer, got {raw!r}")
    torch.set_num_threads(threads)
    return threads


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    bound_threads()
    config = BenchmarkConfig()
    if "--full" in argv:   # the documented full benchmark (docs/BENCHMARK.md)
        config = BenchmarkConfig(levels=[(0.25, 0.75), (0.25, 0.5), (0.5, 0.25), (0.5, 0.1)],
                                 text_layers=1, ablations=True,
                                 subset=500, n0=64, n=10_000, alpha=0.001,
                                 attack_inputs=40, out=config.out.parent / "full")
    run(config)


if __name__ == "__main__":
    main()
