"""Inputs/s of the local backend and of Ray with 1 and 2 workers, and the store's cost.

Uses the demo checkpoint (run `make demo` first) on the safety benchmark's test split.

    RAY_AUTH_MODE=disabled python benchmarks/runs_backends.py [--inputs 40] [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from hybridcert.runs.runner import RunConfig, build_classifier, load_items, run_local, run_ray
from hybridcert.runs.store import RunStore
from hybridcert.smoothing import Certification


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=40)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--checkpoint", default="artifacts/models/image+text_s0.25_a0.2_e20")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    config = RunConfig(dataset=f"safety:test:{args.inputs}", checkpoint=args.checkpoint,
                       sigma=0.25, keep_prob=0.2, n0=32, n=args.n, alpha=0.001)
    items = load_items(config)
    samples = len(items) * (config.n0 + config.n)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "local.sqlite", config.to_dict())
        classifier = build_classifier(config, "cpu", 512)
        start = time.perf_counter()
        run_local(config, items, store, classifier, lambda _: None)
        local = time.perf_counter() - start
        print(f"local backend: {len(items) / local:.2f} inputs/s ({samples / local:,.0f} "
              f"samples/s)")
        for workers in (1, 2):
            store = RunStore(Path(tmp) / f"ray{workers}.sqlite", config.to_dict())
            start = time.perf_counter()
            run_ray(config, items, store, "cpu", 512, lambda _: None, workers=workers)
            took = time.perf_counter() - start
            print(f"ray, {workers} worker(s): {len(items) / took:.2f} inputs/s including "
                  f"cluster start-up ({took:.1f} s)")
        store = RunStore(Path(tmp) / "cost.sqlite", config.to_dict())
        result = Certification(1, [10, 990], 0.98, None, 3, [0.5, 0.4, 0.3, 0.1])
        start = time.perf_counter()
        for i in range(500):
            store.write(i, f"input-{i}", 1, result, 1000)
        per_input = (time.perf_counter() - start) / 500
        print(f"store: {1000 * per_input:.2f} ms per input (one committed, fsynced "
              f"transaction each)")


if __name__ == "__main__":
    main()
