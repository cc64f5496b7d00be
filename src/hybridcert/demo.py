"""``make demo``: the safety-filter benchmark at demo size (about 10 minutes on 2 CPU cores
from a fresh machine, less when the data and models are cached under artifacts/)."""

from __future__ import annotations

import sys

from hybridcert.benchmark import BenchmarkConfig, run


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    config = BenchmarkConfig()
    if "--full" in argv:   # the documented full benchmark (docs/BENCHMARK.md)
        config = BenchmarkConfig(levels=[(0.25, 0.2), (0.5, 0.1), (0.5, 0.05)], n_train=8000,
                                 n_val=1000, n_test=1000, epochs=24, subset=200, n0=64,
                                 n=2000, alpha=0.001, attack_inputs=40,
                                 out=config.out.parent / "full")
    run(config)


if __name__ == "__main__":
    main()
