"""Forward rate of the safety filter (inference, no gradient) on this machine, and the
compute plan it implies for the full benchmark.

For 1, 2, 4 and 6 pretrained MiniLM layers: samples/s of the text encoder alone and of the
whole image+text filter (CNN + MiniLM layers + fusion head), at batch 256 and 1024, at the
captions' median length (13 tokens with [CLS]/[SEP]: every noisy copy of an input has the
input's length, and the model drops all-padding columns) and at the 99th percentile (23).

    .venv/bin/python benchmarks/model_forward_rate.py [--threads 2] [--seconds 2] [--repeats 3]

Each figure is the best of ``--repeats`` timing windows (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from hybridcert.datasets import safety
from hybridcert.models import fusion


def rate(fn, batch: int, seconds: float, repeats: int = 3) -> float:
    """Best of ``repeats`` windows of ``seconds``: samples/s (other jobs on the machine only
    ever slow a window down, so the best window is the least disturbed one)."""
    fn()                                     # warm-up
    best = 0.0
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            done += batch
        best = max(best, done / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", default="1,2,4,6")
    parser.add_argument("--lengths", default="13,23")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} "
          f"torch threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}; "
          f"image 3x{safety.IMAGE_SIZE}x{safety.IMAGE_SIZE}")
    print("| layers | tokens | batch | text encoder (samples/s) | image+text filter "
          "(samples/s) |")
    print("|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    results = {}
    for layers in (int(x) for x in args.layers.split(",")):
        model = fusion.SafetyFilter(fusion.FilterConfig(text_layers=layers)).eval()
        for length in (int(x) for x in args.lengths.split(",")):
            for batch in (256, 1024):
                ids = torch.randint(safety.FIRST_NOISABLE_ID, safety.VOCAB_END,
                                    (batch, length), generator=generator)
                ids[:, 0], ids[:, -1] = safety.CLS_ID, safety.SEP_ID
                inputs = {"image": torch.rand(batch, 3, safety.IMAGE_SIZE, safety.IMAGE_SIZE,
                                              generator=generator),
                          "text": ids, "text_attention": torch.ones_like(ids)}
                with torch.inference_mode():
                    text = rate(lambda m=model, i=inputs: m.text_features(
                        i["text"], i["text_attention"]), batch, args.seconds, args.repeats)
                    whole = rate(lambda m=model, i=inputs: m(i), batch, args.seconds,
                                 args.repeats)
                results[layers, length, batch] = whole
                print(f"| {layers} | {length} | {batch} | {text:,.0f} | {whole:,.0f} |",
                      flush=True)
    budget = 7200.0
    print(f"\nFull-benchmark budget {budget:.0f} s on these cores; forward passes it affords "
          f"at the median length, batch 1024:")
    for layers in sorted({k[0] for k in results}):
        per_s = results.get((layers, 13, 1024))
        if per_s:
            passes = per_s * budget
            print(f"  {layers} layer(s): {passes / 1e6:.1f} M passes = {passes / 6000:,.0f} per "
                  f"(input, model) for 500 inputs x 12 models (3 seeds x 4 keep levels)")


if __name__ == "__main__":
    main()
