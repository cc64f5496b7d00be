"""The demo model for ``hybridcert serve --demo`` (``make serve``): the image+text safety
filter (:mod:`hybridcert.models.fusion`) with its default configuration, trained under the
noise it is served with and cached under ``artifacts/models/<config name>`` (trained on first
use with the project's own training code: several minutes on 2 CPU cores)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

#: Default target regions of the demo: (L2 radius on the image in [0, 1], changed tokens).
DEMO_TARGETS = ([0.0, 0], [0.25, 0], [0.0, 1], [0.25, 1])


def demo_config():
    """The demo model's :class:`~hybridcert.models.fusion.FilterConfig` (the defaults)."""
    from hybridcert.models import fusion

    return fusion.FilterConfig()


def demo_checkpoint(cache: Path = Path("artifacts"), log: Callable[[str], None] = print
                    ) -> Path:
    """The demo checkpoint folder, trained first if absent."""
    from hybridcert.data import safety
    from hybridcert.models import fusion, training

    config = demo_config()
    directory = cache / "models" / config.name
    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return directory
    log(f"training the demo model into {directory} (once; several minutes on a CPU) ...")
    data = safety.splits(cache=cache / "data")
    model = training.train(config, data["train"], log=lambda m: log("  " + m))
    fusion.save(model, directory)
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
