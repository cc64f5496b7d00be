"""Where the service's batching engine spends its time, without HTTP: many decisions
submitted at once to a :class:`~hybridcert.sequential.driver.Driver`, the worker thread
under cProfile (which slows Python-heavy code, so read the shares, not the absolute rate).

Printed: decisions/s, rows/s and the model's forward seconds (the model is the bottleneck when
forward seconds are close to the wall time), then the worker thread's top functions.

Usage::

    python benchmarks/service_engine_profile.py                    # demo model, CPU
    python benchmarks/service_engine_profile.py --device cuda --decisions 512
    python benchmarks/service_engine_profile.py --checkpoint CKPT --inputs-jsonl in.jsonl \\
        --sigma 0.25 --keep-prob 0.75
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service_load  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a checkpoint folder instead of the demo model")
    parser.add_argument("--inputs-jsonl", type=Path, help="inputs (default: demo test split)")
    parser.add_argument("--sigma", type=float, default=None)
    parser.add_argument("--keep-prob", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decisions", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--group-rows", type=int, default=None,
                        help="default: as the service, 32 on CPU, 0 on GPU")
    parser.add_argument("--top", type=int, default=18)
    args = parser.parse_args(argv)
    from hybridcert.runs.config import RunConfig
    from hybridcert.runs.runner import plan
    from hybridcert.sequential.driver import Driver
    from hybridcert.serve.demo import DEMO_TARGETS, demo_adapter, demo_checkpoint, demo_config
    from hybridcert.serve.rules import DecisionRules

    torch.set_grad_enabled(False)
    targets = [list(t) for t in DEMO_TARGETS]
    if args.checkpoint:
        if args.inputs_jsonl is None or args.sigma is None or args.keep_prob is None:
            parser.error("--checkpoint needs --inputs-jsonl, --sigma and --keep-prob")
        config = RunConfig(sigma=args.sigma, keep_prob=args.keep_prob, targets=targets,
                           checkpoint=args.checkpoint, mode="decision")
        adapter = None
        inputs = service_load.jsonl_inputs(args.inputs_jsonl, 64)
    else:
        directory, trained = demo_checkpoint(), demo_config()
        config = RunConfig(sigma=trained.sigma, keep_prob=trained.keep_prob, targets=targets,
                           checkpoint=str(directory), mode="decision")
        adapter = demo_adapter(directory)
        inputs = service_load.demo_inputs(64)
    run = plan(config, args.device, args.batch_size, adapter=adapter)
    records = []
    for image, text in inputs:
        block, _ = service_load._processor(run).process(Image.open(io.BytesIO(image)))
        tokens = next(iter(run.adapter.text.values())).encode(text)
        records.append(run.classifier.validate({service_load._image_block(run): block,
                                                next(iter(run.adapter.text)): tokens}))
    group_rows = args.group_rows if args.group_rows is not None else \
        (32 if args.device == "cpu" else 0)
    rules = DecisionRules(run.config, run.noise)
    profiles = {}
    work = Driver._work

    def profiled(self):
        profile = cProfile.Profile()
        profile.enable()
        try:
            work(self)
        finally:
            profile.disable()
            profiles["worker"] = profile

    Driver._work = profiled
    print(f"device {args.device}, batch {args.batch_size}, --group-rows {group_rows}, "
          f"{len(records)} distinct inputs")
    for label, count in (("warm-up", 32), ("measured", args.decisions)):
        engine = Driver(run.classifier, args.batch_size, max(count, 1),
                        group_rows=group_rows).start()
        start = time.perf_counter()
        jobs = [engine.submit(records[i % len(records)], i, rules.new(), 3600)
                for i in range(count)]
        for job in jobs:
            job.future.result()
        elapsed = time.perf_counter() - start
        engine.close()
        print(f"{label}: {count} decisions in {elapsed:.2f} s: {count / elapsed:.1f}/s, "
              f"{engine.stats.rows / elapsed:,.0f} rows/s, forward {engine.stats.forward_s:.2f}"
              f" s, {engine.stats.batches} batches")
    pstats.Stats(profiles["worker"]).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
