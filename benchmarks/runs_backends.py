"""Inputs/s of the local backend and of Ray with 1 and 2 workers, and the store's cost.

Uses the demo checkpoint (run `make demo` first) on the safety benchmark's test split.

    RAY_AUTH_MODE=disabled python benchmarks/runs_backends.py [--inputs 40] [--n 1000]
                                                             [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from hybridcert.runs.config import RunConfig
from hybridcert.runs.runner import LocalBackend, RayBackend, load_items, plan
from hybridcert.runs.store import RunStore
from hybridcert.smoothing import result_row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=40)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint folder written by make demo (artifacts/models/...)")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--keep-prob", type=float, default=0.25)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    config = RunConfig(dataset=f"safety:test:{args.inputs}", checkpoint=args.checkpoint,
                       sigma=args.sigma, keep_prob=args.keep_prob, n0=32, n=args.n,
                       alpha=0.001)
    run = plan(config, "cpu", 512)
    items = load_items(run)
    samples = len(items) * (config.n0 + config.n)
    with tempfile.TemporaryDirectory() as tmp:
        def sink(store):
            return lambda item, result: store.write(
                result_row(item.idx, item.input_id, item.label, result), item.content_hash)

        store = RunStore(Path(tmp) / "local.sqlite", config.to_dict())
        start = time.perf_counter()
        LocalBackend(run).certify(items, sink(store))
        local = time.perf_counter() - start
        print(f"local backend: {len(items) / local:.2f} inputs/s ({samples / local:,.0f} "
              f"samples/s)")
        rows = store.rows()
        for workers in (1, 2):
            store = RunStore(Path(tmp) / f"ray{workers}.sqlite", config.to_dict())
            start = time.perf_counter()
            RayBackend(config, "cpu", 512, workers=workers).certify(items, sink(store))
            took = time.perf_counter() - start
            print(f"ray, {workers} worker(s): {len(items) / took:.2f} inputs/s including "
                  f"cluster start-up ({took:.1f} s)")
        store = RunStore(Path(tmp) / "cost.sqlite", config.to_dict())
        start = time.perf_counter()
        for i in range(500):
            row = dict(rows[i % len(rows)], id=f"input-{i}", idx=i)
            store.write(row, f"hash-{i}")
        per_input = (time.perf_counter() - start) / 500
        print(f"store: {1000 * per_input:.2f} ms per input (one committed, fsynced "
              f"transaction each)")


if __name__ == "__main__":
    main()
