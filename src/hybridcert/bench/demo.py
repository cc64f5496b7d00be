"""``make demo`` (``python -m hybridcert.bench.demo``): the safety-filter benchmark at demo size
(one filter at sigma 0.25, keep 0.25, one seed, 80 test inputs: the joint certificate against
sequential composition, the per-modality check and unimodal smoothing on the same inputs; no
attacks and no counterexample search; under 6 minutes on 2 CPU cores from a fresh clone,
set-up and training included); ``--full`` (``make full-benchmark``): the full benchmark with
the factorized AND, the attacks and the counterexample search (docs/BENCHMARK.md); ``--out
DIR``: where the report goes (default ``artifacts/demo`` or ``artifacts/full``).

Torch uses at most ``HYBRIDCERT_THREADS`` threads (default: 2, or fewer cores), so a busy
machine is not oversubscribed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from hybridcert.bench.runner import BenchmarkConfig, full_config, run


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


def parse(argv: list[str]) -> BenchmarkConfig:
    """The configuration of ``[--full] [--out DIR]``."""
    args = list(argv)
    full = "--full" in args
    if full:
        args.remove("--full")
    out = None
    if "--out" in args:
        at = args.index("--out")
        if at + 1 >= len(args):
            raise ValueError("--out needs a folder")
        out = Path(args[at + 1])
        del args[at: at + 2]
    if args:
        raise ValueError(f"unknown arguments {args}; use [--full] [--out DIR]")
    if full:
        return full_config(out or Path("artifacts/full"))
    config = BenchmarkConfig()
    if out is not None:
        config.out = out
    return config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = parse(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    bound_threads()
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
