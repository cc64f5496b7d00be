"""The demo model for ``hybridcert serve --demo`` (``make serve``): the image+text safety
filter of ``make demo`` (:mod:`hybridcert.benchmark`: its first noise level, its training
recipe, its checkpoint under ``artifacts/models``), trained first if absent — the same
checkpoint ``make demo`` trains and reuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

#: Default target regions of the demo: (L2 radius on the image in [0, 1], changed tokens).
DEMO_TARGETS = ([0.0, 0], [0.25, 0], [0.0, 1], [0.25, 1])


def demo_config():
    """The demo model's :class:`~hybridcert.models.fusion.FilterConfig`: both modalities at
    the benchmark's first noise level."""
    from hybridcert.benchmark import BenchmarkConfig
    from hybridcert.models import fusion

    bench = BenchmarkConfig()
    sigma, keep_prob = bench.levels[0]
    return fusion.FilterConfig(("image", "text"), text_layers=bench.text_layers, sigma=sigma,
                               keep_prob=keep_prob, seed=bench.seed)


def demo_checkpoint(log: Callable[[str], None] = print) -> Path:
    """The demo checkpoint folder (``make demo``'s), trained first if absent."""
    from rich.console import Console

    from hybridcert.benchmark import BenchmarkConfig, _model
    from hybridcert.data import safety

    bench = BenchmarkConfig()
    config = demo_config()
    directory = bench.cache / "models" / f"{config.name}_e{bench.epochs}_v{safety.VERSION}"
    if not ((directory / "config.json").is_file() and
            (directory / "model.safetensors").is_file()):
        log(f"training the demo model into {directory} (once; long on a CPU) ...")
        data = safety.splits(bench.n_train, bench.n_val, bench.n_test, bench.seed,
                             bench.cache / "data")
        _model(bench.cache, config, data["train"], bench.epochs, Console(stderr=True))
    return directory


def demo_adapter(directory: Path):
    """The checkpoint's :class:`~hybridcert.adapters.ModelAdapter` (its own tokenizer and
    image size) from the model side's loader; for the demo page, images of another size are
    scaled and centre-cropped to the model's size (reported in each answer's ``notes``)."""
    import dataclasses

    from hybridcert.adapters import ModelAdapter
    from hybridcert.models import fusion

    adapter = ModelAdapter.wrap(fusion.load_adapter(directory))
    adapter.images = {name: dataclasses.replace(p, resize="shortest_edge_crop")
                      if p.resize == "refuse" else p for name, p in adapter.images.items()}
    return adapter
