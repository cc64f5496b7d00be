"""``make demo`` (``python -m hybridcert.bench.demo``): the safety-filter benchmark at demo size
(one filter at sigma 0.25, keep 0.25, one seed, 80 test inputs: the joint certificate against
sequential composition, the per-modality check and unimodal smoothing on the same inputs; no
attacks and no counterexample search; under 6 minutes on 2 CPU cores from a fresh clone,
set-up and training included); ``--full`` (``make full-benchmark``): the full benchmark with
the factorized AND, the attacks and the counterexample search (docs/BENCHMARK.md); ``--out
DIR``: where the report goes (default ``artifacts/demo`` or ``artifacts/full``); ``--device
cpu|cuda|cuda:N`` (``make full-benchmark DEVICE=cuda``): where the filters are trained and
run and the noise is drawn (default cpu; on CUDA 1,024 copies per forward pass, and other
noisy copies per seed, so other numbers than a CPU run's).

Torch uses at most ``HYBRIDCERT_THREADS`` threads (default: 2, or fewer cores), so a busy
machine is not oversubscribed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from hybridcert.bench.runner import BenchmarkConfig, check_device, full_config, run


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
    """The configuration of ``[--full] [--out DIR] [--device DEVICE]`` (a bad or unavailable
    device: ValueError, before anything is written)."""
    args = list(argv)
    full = "--full" in args
    if full:
        args.remove("--full")
    values: dict[str, str] = {}
    for option, what in (("--out", "a folder"), ("--device", "cpu, cuda or cuda:N")):
        if option in args:
            at = args.index(option)
            if at + 1 >= len(args) or args[at + 1].startswith("--"):
                raise ValueError(f"{option} needs {what}")
            values[option] = args[at + 1]
            del args[at: at + 2]
    if args:
        raise ValueError(f"unknown arguments {args}; use [--full] [--out DIR] "
                         f"[--device cpu|cuda|cuda:N]")
    device = check_device(values.get("--device", "cpu"))
    out = Path(values["--out"]) if "--out" in values else None
    if full:
        return full_config(out or Path("artifacts/full"), device)
    config = BenchmarkConfig(device=device)
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
