"""Trained filters on disk: the training recipe shared by ``make serve``'s demo model and the
benchmark, and a cache of checkpoints trained once and reused.

Checkpoints live under ``<cache>/models/<config name>_e<epochs>_n<train records>_v<dataset
version>`` (safetensors + JSON, :func:`hybridcert.models.fusion.save`), beside a
``training.json`` that records the training time, the checkpoint's SHA-256
(:func:`hybridcert.models.fusion.checkpoint_sha256`), torch, the thread count and the machine.
Filters trained on an accelerator live apart, in ``..._v<version>_<device type>`` (``_cuda``):
their weights differ from the CPU's, and a CPU run never picks them up (nor they the
package's or the manifest's CPU checkpoints).

``manifest.json`` (committed beside this module) holds the SHA-256s that :data:`RECIPE`'s
filters had when the committed reports were made.  Training is bit-identical for a seed on one
machine, not across CPUs or torch builds: a retrained checkpoint whose hash differs from the
manifest's is used all the same, with one line saying that the figures that depend on it will
not match the committed report (said again whenever it is reused).  A checkpoint shipped in
the package (``trained/<folder>``; none at present: 8.8 MB each) is used before the cache's
and instead of training.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridcert.datasets import safety
from hybridcert.models import fusion, training


@dataclass(frozen=True)
class Recipe:
    """How the demo filters are trained: split sizes, epochs, MiniLM layers kept, the
    dataset's seed and where data and checkpoints are cached (the benchmark's defaults)."""

    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 1000
    epochs: int = 8
    text_layers: int = 1
    data_seed: int = 0
    cache: Path = Path("artifacts")


#: The recipe of ``make serve``'s model and the benchmark's filters.
RECIPE = Recipe()
#: File beside a checkpoint recording its training time, SHA-256 and where it was trained.
TRAINING_RECORD = "training.json"
#: The committed SHA-256s of the recipe's checkpoints, by checkpoint folder name.
MANIFEST = Path(__file__).with_name("manifest.json")
#: Checkpoints shipped in the package, by checkpoint folder name.
PACKAGED = Path(__file__).with_name("trained")


def checkpoint_dir(cache: Path, config: fusion.FilterConfig, epochs: int, n_train: int,
                   device: str = "cpu") -> Path:
    """Where the checkpoint of ``config`` trained ``epochs`` epochs on ``n_train`` records
    (on ``device``: off the CPU, a folder of its own) lives."""
    kind = torch_device_type(device)
    return Path(cache) / "models" / (f"{config.name}_e{epochs}_n{n_train}_v{safety.VERSION}"
                                     + ("" if kind == "cpu" else f"_{kind}"))


def torch_device_type(device) -> str:
    """"cpu", "cuda", ... of a device name ("cuda:1" -> "cuda")."""
    return str(device).split(":")[0]



def manifest_entry(name: str) -> dict | None:
    """The committed manifest's entry of the checkpoint folder ``name`` (None if absent):
    ``sha256`` (the checkpoint's), ``data_sha256`` (its training data's) and where it was
    trained."""
    try:
        entry = json.loads(MANIFEST.read_text(encoding="utf-8"))["checkpoints"].get(name)
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and "sha256" in entry else None


def check_manifest(name: str, digest: str, data: str | None = None,
                   log: Callable[[str], None] = print) -> bool | None:
    """Compare a (re)trained checkpoint's SHA-256 with the committed manifest's and log one
    line, unless the manifest has no entry for it.  A difference does not stop the run.

    Returns
    -------
    bool or None
        True: equal; False: different; None: the manifest has no entry.
    """
    entry = manifest_entry(name)
    if entry is None:
        return None
    expected = entry["sha256"]
    if digest == expected:
        log(f"  {name}: SHA-256 {digest[:16]}... matches the committed manifest")
        return True
    cause = "the training data differ too" if data is not None and \
        entry.get("data_sha256") not in (None, data) else \
        "same training data; another CPU, torch build or thread count"
    log(f"  warning: {name} trained to SHA-256 {digest[:16]}..., not the committed manifest's "
        f"{expected[:16]}... ({cause}): the figures that depend on it will not match the "
        f"committed report")
    return False


def data_sha256(data: safety.SafetyData) -> str:
    """SHA-256 of a split's model inputs and labels (pixels, token ids, attention, labels;
    each as stored, in that order): tells a different training set from a different
    training trajectory when a checkpoint's hash differs."""
    digest = hashlib.sha256()
    for array in (data.pixels, data.tokens, data.attention, data.labels):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def training_record(seconds: float, digest: str, data: str, device: str = "cpu") -> dict:
    """The contents of ``training.json``: seconds, the checkpoint's and the training data's
    SHA-256, and what trained it (``device`` named when not the CPU)."""
    import torch

    out = {"seconds": round(seconds, 1), "sha256": digest, "data_sha256": data,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "processor": _processor()}
    if device != "cpu":
        out["device"] = torch.cuda.get_device_name(torch.device(device)) \
            if device.startswith("cuda") else device
    return out


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def packaged_checkpoint(directory_name: str) -> Path | None:
    """The package's own copy of the checkpoint folder ``directory_name``, if it ships one."""
    folder = PACKAGED / directory_name
    return folder if (folder / "config.json").is_file() and \
        (folder / "model.safetensors").is_file() else None


def provenance(cache: Path, config: fusion.FilterConfig, epochs: int, n_train: int,
               device: str = "cpu") -> dict:
    """Which checkpoint :func:`load_or_train` uses for ``config`` (``"packaged"`` or
    ``"cache"``), its SHA-256, and whether that equals the committed manifest's (``manifest``:
    True / False, None when the manifest has no entry)."""
    directory = checkpoint_dir(cache, config, epochs, n_train, device)
    packaged = packaged_checkpoint(directory.name)
    folder = packaged or directory
    digest = fusion.checkpoint_sha256(folder)
    entry = manifest_entry(directory.name)
    return {"source": "packaged" if packaged else "cache", "sha256": digest,
            "manifest": None if entry is None else entry["sha256"] == digest}


def load_or_train(cache: Path, config: fusion.FilterConfig, train_data: safety.SafetyData,
                  epochs: int, log: Callable[[str], None] = print, device: str = "cpu"
                  ) -> tuple[fusion.SafetyFilter, float]:
    """The checkpoint of ``config``: the package's copy, else the cache's, else trained into
    the cache (on ``device``, in its own folder off the CPU, :func:`checkpoint_dir`; the model
    returned is on the CPU either way); checked against the committed manifest
    (:func:`check_manifest`).  Returns it with its
    training time in seconds (when reused: the time recorded beside it when it was trained,
    0 without one)."""
    directory = checkpoint_dir(cache, config, epochs, len(train_data), device)
    for folder in (packaged_checkpoint(directory.name), directory):
        if folder is None:
            continue
        try:
            model = fusion.load(folder)
        except FileNotFoundError:
            continue
        log(f"reusing {folder}")
        try:
            record = json.loads((folder / TRAINING_RECORD).read_text())
            seconds = float(record["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            record, seconds = {}, 0.0
        data = record.get("data_sha256") if isinstance(record, dict) else None
        check_manifest(directory.name, fusion.checkpoint_sha256(folder), data, log)
        return model, seconds
    log(f"training {directory.name} ...")
    start = time.perf_counter()
    model = training.train(config, train_data, epochs=epochs, log=lambda m: log("  " + m),
                           device=device)
    seconds = time.perf_counter() - start
    fusion.save(model, directory)
    digest = fusion.checkpoint_sha256(directory)
    record = training_record(seconds, digest, data_sha256(train_data), device)
    (directory / TRAINING_RECORD).write_text(json.dumps(record, indent=1))
    log(f"  trained in {seconds:.0f} s, SHA-256 {digest[:16]}...")
    check_manifest(directory.name, digest, record["data_sha256"], log)
    return model, seconds


def demo_filter_config(level: tuple[float, float] = (0.25, 0.75), seed: int = 0
                       ) -> fusion.FilterConfig:
    """The ``make serve`` model's :class:`~hybridcert.models.fusion.FilterConfig`: both
    modalities at ``level`` (sigma, keep) — the full benchmark's first level —, ``seed``,
    :data:`RECIPE`'s MiniLM layers."""
    sigma, keep = level
    return fusion.FilterConfig(("image", "text"), text_layers=RECIPE.text_layers, sigma=sigma,
                               keep_prob=keep, seed=seed)


def demo_checkpoint(log: Callable[[str], None] = print) -> Path:
    """The folder of the ``make serve`` model's checkpoint (the full benchmark's seed-0 filter
    at keep 0.75, trained with :data:`RECIPE`): the package's copy, else the cache's, else
    trained first into the cache."""
    config = demo_filter_config()
    directory = checkpoint_dir(RECIPE.cache, config, RECIPE.epochs, RECIPE.n_train)
    packaged = packaged_checkpoint(directory.name)
    if packaged is not None:
        return packaged
    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return directory
    log(f"training the demo model into {directory} (once; about a minute on 2 cores) ...")
    data = safety.splits(RECIPE.n_train, RECIPE.n_val, RECIPE.n_test, RECIPE.data_seed,
                         RECIPE.cache / "data")
    load_or_train(RECIPE.cache, config, data["train"], RECIPE.epochs, log)
    return directory
