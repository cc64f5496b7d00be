"""Load benchmark of ``hybridcert serve``: latency and certified decisions per second at
several concurrencies, against the physical limit measured in the same run.

The service runs in its own process (``hybridcert serve --demo`` by default: the demo
safety filter, trained under artifacts/ first if absent); this process sends the requests
(httpx, asyncio) and, while the service is idle, times the model's raw forward pass on
pre-made noisy batches of the service's batch size, in a worker thread as the service's
engine runs it (and in the main thread, for comparison).  The limit is

    raw forward rate (samples/s) / mean base-model evaluations per decision,

the decisions per second a perfect server could give on the same inputs; the rate is the
highest measured (at the service's batch size before and after the load, at 1/8, 1/4 and 1/2
of it before — on a CPU a smaller batch can be faster per row — and in the main thread).
Printed per concurrency: p50 / p99 latency (client side), decisions/s, mean queries (evaluations the
decisions used) and drawn (copies evaluated, speculative ones included), mean batch fill,
decisions/s as a share of the limit, and the rows/s the decisions used as a share of the
model's rate on batches that mix 8 inputs (as the service's batches do under concurrent load;
a model that trims padding runs those at its longest text).

Usage::

    python benchmarks/service_load.py                      # demo model, levels 1, 8, 32
    python benchmarks/service_load.py --levels 1,8 --requests 40 --device cuda
    python benchmarks/service_load.py --model tests.serve.toy_model:factory \\
        --inputs-jsonl inputs.jsonl -- --sigma 0.25 --keep-prob 0.8 --target 0,0
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def demo_inputs(count: int) -> list[tuple[bytes, str]]:
    """The first ``count`` records of the demo test split as (PNG bytes, caption)."""
    from PIL import Image

    from hybridcert.datasets import safety

    test = safety.splits(cache=Path("artifacts/data"))["test"]
    out = []
    for i in range(min(count, len(test))):
        buffer = io.BytesIO()
        Image.fromarray(test.pixels[i].transpose(1, 2, 0)).save(buffer, "PNG")
        out.append((buffer.getvalue(), str(test.texts[i])))
    return out


def jsonl_inputs(path: Path, count: int) -> list[tuple[bytes, str]]:
    """(image bytes, text) of the first ``count`` rows of a JSONL file (image paths are
    relative to it)."""
    out = []
    for line in path.read_text().splitlines()[:count]:
        row = json.loads(line)
        out.append(((path.parent / row["image"]).read_bytes(), row["text"]))
    return out


def raw_forward_rate(run, inputs, batch_size: int, seconds: float, mixed: int = 1,
                     group_rows: int = 0) -> float:
    """Samples/s of the model alone on 8 pre-made noisy batches of ``batch_size`` rows
    (the labels computed as the service computes them: forward pass and argmax); each batch
    holds the copies of one input, or with ``mixed=m`` equal shares of ``m`` inputs, as the
    service's batches do under concurrent load (a model that trims padding pays for the
    longest text in a batch).  With ``group_rows`` a mixed batch runs as the service's engine
    runs it: its inputs ordered by text length, one forward pass per slice of one length."""
    from PIL import Image

    from hybridcert.sequential.driver import attended_lengths, labels_in_slices, slice_ends

    records = []
    for image, text in inputs[:8 * mixed]:
        block, _ = _processor(run).process(Image.open(io.BytesIO(image)))
        tokens = next(iter(run.adapter.text.values())).encode(text)
        records.append(run.classifier.validate({_image_block(run): block,
                                                next(iter(run.adapter.text)): tokens}))
    share = max(1, batch_size // mixed)
    parts = [run.classifier.stream(r, 1000 + i).copies(share) for i, r in enumerate(records)]
    lengths = [attended_lengths(r) for r in records]
    batches = []
    for j in range(8):
        members = range(j * mixed, (j + 1) * mixed)
        if group_rows:
            members = sorted(members, key=lambda i: lengths[i])
        batch = {key: torch.cat([parts[i][key] for i in members]) for key in parts[0]}
        ends = slice_ends([(lengths[i], share) for i in members], group_rows)
        batches.append((batch, ends))
    base = run.classifier.base
    for batch, ends in batches:
        labels_in_slices(base, batch, ends)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch, ends = batches[done % len(batches)]
        labels_in_slices(base, batch, ends)       # ends in .cpu(): waits for a GPU
        done += 1
    return done * share * mixed / (time.perf_counter() - start)


def in_thread(function, *args):
    """``function(*args)`` in a fresh worker thread: the service's engine runs the model in
    one, and on a busy CPU torch's speed there can differ tenfold from the main thread's."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def _image_block(run) -> str:
    return next(iter(run.adapter.images)) if run.adapter.images else \
        run.noise.continuous[0].name


def _processor(run):
    from hybridcert.serve.service import service_processor

    return service_processor(run, _image_block(run))


async def load(url: str, inputs, concurrency: int, requests: int, tag: str) -> dict:
    import httpx

    latencies, answers, statuses = [], [], {}
    queue: asyncio.Queue = asyncio.Queue()
    for k in range(requests):
        queue.put_nowait(k)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker():
            while not queue.empty():
                k = queue.get_nowait()
                image, text = inputs[k % len(inputs)]
                body = {"image": base64.b64encode(image).decode(), "text": text,
                        "id": f"{tag}-{k}"}
                start = time.perf_counter()
                response = await client.post(url + "/v1/moderate", json=body)
                latencies.append(time.perf_counter() - start)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    answers.append(response.json())

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "answers": answers, "statuses": statuses,
            "elapsed": elapsed}


def batch_fill(url: str) -> tuple[float, float]:
    """(sum, count) of the service's batch-fill histogram."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        if family.name == "hybridcert_batch_fill":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
    return total, count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="serve this checkpoint instead of the demo")
    parser.add_argument("--model", help="serve this entry point instead of the demo")
    parser.add_argument("--inputs-jsonl", type=Path, help="inputs (default: demo test split)")
    parser.add_argument("--inputs", type=int, default=64, help="distinct inputs cycled")
    parser.add_argument("--levels", default="1,8,32", help="concurrencies")
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per level (default: max(32, 4 x concurrency))")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--group-rows", type=int, default=None,
                        help="the service's --group-rows (default: its own, 32 on CPU, 0 on "
                             "GPU)")
    parser.add_argument("--raw-seconds", type=float, default=8.0)
    parser.add_argument("serve_args", nargs="*", help="more `hybridcert serve` options "
                        "(after --)")
    args = parser.parse_args(argv)
    from hybridcert.runs.config import RunConfig
    from hybridcert.runs.runner import plan

    if args.checkpoint or args.model:
        source = ["--checkpoint", args.checkpoint] if args.checkpoint else \
            ["--model", args.model]
        if args.inputs_jsonl is None:
            parser.error("--inputs-jsonl is needed with --checkpoint or --model")
        inputs = jsonl_inputs(args.inputs_jsonl, args.inputs)
        config = RunConfig(**{"targets": [[0.0, 0]], **_config_from_flags(args.serve_args)},
                           checkpoint=args.checkpoint, model=args.model, mode="decision")
        adapter = None
    else:
        from hybridcert.serve.demo import DEMO_TARGETS, demo_adapter, demo_checkpoint, demo_config

        directory = demo_checkpoint()
        source = ["--demo"]
        inputs = demo_inputs(args.inputs)
        trained = demo_config()
        config = RunConfig(**{"sigma": trained.sigma, "keep_prob": trained.keep_prob,
                              "targets": [list(t) for t in DEMO_TARGETS],
                              **_config_from_flags(args.serve_args)},
                           checkpoint=str(directory), mode="decision")
        adapter = demo_adapter(directory)
    run = plan(config, args.device, args.batch_size, adapter=adapter)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A fixed seed key: the same input gets the same noise in every run of the benchmark
    # (the service's default is a fresh secret per start).
    key_file = Path(tempfile.mkdtemp(prefix="service-load-")) / "seed.key"
    key_file.write_text(BENCHMARK_SEED_KEY)
    key_file.chmod(0o600)                 # the service refuses a key others may read
    key_args = [] if "--seed-key-file" in args.serve_args else ["--seed-key-file",
                                                                str(key_file)]
    command = [sys.executable, "-m", "hybridcert.cli.main", "serve", *source, "--port",
               str(port), "--batch-size", str(args.batch_size), "--device", args.device,
               "--timeout", "600", "--max-pending", "4096", "--log-level", "warning",
               *key_args,
               *([] if args.group_rows is None else ["--group-rows", str(args.group_rows)]),
               *args.serve_args]
    if args.group_rows is None:
        args.group_rows = 32 if args.device == "cpu" else 0
    server = subprocess.Popen(command, cwd=os.getcwd(), stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(url, server)
        sizes = sorted({max(1, args.batch_size // 8), max(1, args.batch_size // 4),
                        max(1, args.batch_size // 2), args.batch_size})
        by_size = {size: in_thread(raw_forward_rate, run, inputs, size, args.raw_seconds)
                   for size in sizes}
        main_thread = raw_forward_rate(run, inputs, args.batch_size, args.raw_seconds)
        mixing = min(8, max(1, len(inputs) // 8))
        mixed_rate = in_thread(raw_forward_rate, run, inputs, args.batch_size,
                               args.raw_seconds, mixing)
        sliced_rate = in_thread(raw_forward_rate, run, inputs, args.batch_size,
                                args.raw_seconds, mixing, args.group_rows) \
            if args.group_rows else mixed_rate
        raw = [by_size[args.batch_size]]
        asyncio.run(load(url, inputs, 2, 4, "warmup"))
        rows = []
        for level in [int(v) for v in args.levels.split(",")]:
            requests = args.requests or max(32, 4 * level)
            before = batch_fill(url)
            result = asyncio.run(load(url, inputs, level, requests, f"c{level}"))
            after = batch_fill(url)
            fill = (after[0] - before[0]) / max(after[1] - before[1], 1)
            rows.append((level, requests, result, fill))
        raw.append(in_thread(raw_forward_rate, run, inputs, args.batch_size, args.raw_seconds))
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    _report(args, config, raw, rows, by_size, main_thread, mixed_rate, sliced_rate)


#: Not a secret: it keeps the benchmark's noise the same from run to run.
BENCHMARK_SEED_KEY = "hybridcert-service-load-benchmark-seed-key-v1\n"


def _config_from_flags(flags: list[str]) -> dict:
    """The RunConfig fields of the serve options that change decisions (for the raw-rate
    model; the server parses the same flags itself)."""
    from hybridcert.runs.config import parse_target

    names = {"--sigma": ("sigma", float), "--keep-prob": ("keep_prob", float),
             "--alpha": ("alpha", float), "--n": ("n", int), "--seed": ("seed", int),
             "--noise": ("noise", str), "--image-size": ("image_size", None)}
    out: dict = {}
    i = 0
    while i < len(flags):
        flag = flags[i]
        value = flags[i + 1] if i + 1 < len(flags) else None
        if flag == "--target":
            out.setdefault("targets", []).append(parse_target(value))
        elif flag in names:
            key, kind = names[flag]
            out[key] = [int(v) for v in value.lower().split("x")] * (1 if "x" in value else 2) \
                if kind is None else kind(value)
        i += 2
    return out


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 3600           # the demo model may be trained first
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited: {server.stderr.read()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the service did not start")


def _report(args, config, raw, rows, by_size, main_thread, mixed_rate, sliced_rate) -> None:
    rate = max(max(raw), max(by_size.values()), main_thread)
    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(0)})"
    print(f"hybridcert serve load benchmark — {platform.machine()}, {os.cpu_count()} CPU "
          f"cores, torch {torch.__version__} ({torch.get_num_threads()} threads), device "
          f"{device}")
    print(f"model: {config.checkpoint or config.model}; alpha {config.alpha}, query cap "
          f"{config.n}, targets {config.targets}; batch size {args.batch_size}")
    print(f"raw forward rate at batch {args.batch_size}, in a worker thread as the service "
          f"runs the model: {raw[0]:,.0f} samples/s before, {raw[1]:,.0f} after the load; "
          f"in the main thread: {main_thread:,.0f}/s; by batch size (worker thread, before): "
          + ", ".join(f"{size}: {value:,.0f}/s" for size, value in by_size.items()))
    print(f"limit = {rate:,.0f} samples/s (the highest of these) / mean queries per decision; "
          f"the issue's own limit uses the rate at the service's batch size, {max(raw):,.0f} "
          f"samples/s (worker thread, the better of before and after): 'share at batch "
          f"{args.batch_size}'")
    print(f"mixed-traffic reference: {mixed_rate:,.0f} samples/s at batch {args.batch_size} "
          f"when each batch holds equal shares of 8 inputs, in one forward pass (worker "
          f"thread); {sliced_rate:,.0f} samples/s in slices of one text length as the service "
          f"runs them (--group-rows {args.group_rows}); the last column is decisions/s x mean "
          f"queries against the higher (concurrency > 1: batches mix inputs)")
    print()
    header = ("conc", "requests", "ok", "p50 ms", "p99 ms", "decisions/s", "mean queries",
              "mean drawn", "batch fill", "limit/s", "share of limit",
              f"share at batch {args.batch_size}", "share of mixed")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for level, requests, result, fill in rows:
        answers = result["answers"]
        lat = np.array(result["latencies"]) * 1000
        queries = np.mean([a["queries"] for a in answers]) if answers else float("nan")
        drawn = np.mean([a["drawn"] for a in answers]) if answers else float("nan")
        per_s = len(answers) / result["elapsed"]
        limit = rate / queries
        decisions = {}
        for answer in answers:
            decisions[answer["decision"]] = decisions.get(answer["decision"], 0) + 1
        print(f"{level} | {requests} | {len(answers)} | {np.percentile(lat, 50):.0f} | "
              f"{np.percentile(lat, 99):.0f} | {per_s:.2f} | {queries:.0f} | {drawn:.0f} | "
              f"{fill:.2f} | {limit:.2f} | {per_s / limit:.0%} | "
              f"{per_s * queries / max(raw):.0%} | "
              + (f"{per_s * queries / max(mixed_rate, sliced_rate):.0%}" if level > 1 else "–"))
    print()
    for level, _, result, _ in rows:
        decisions = {}
        for answer in result["answers"]:
            decisions[answer["decision"]] = decisions.get(answer["decision"], 0) + 1
        print(f"concurrency {level}: statuses {result['statuses']}, decisions {decisions}")


if __name__ == "__main__":
    main()
