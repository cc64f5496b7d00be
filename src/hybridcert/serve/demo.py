"""The demo model for ``hybridcert serve --demo`` (``make serve``): the image+text safety
filter at keep 0.75, seed 0 (:func:`hybridcert.models.checkpoints.demo_filter_config`: the full
benchmark's first level and training recipe, its checkpoint under ``artifacts/models``),
trained first if absent — the same checkpoint ``make full-benchmark`` trains and reuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

#: Default target regions of the demo: (L2 radius on the image in [0, 1], changed tokens).
DEMO_TARGETS = ([0.0, 0], [0.25, 0], [0.0, 1], [0.25, 1])


def demo_config():
    """The demo model's :class:`~hybridcert.models.fusion.FilterConfig` (the benchmark's)."""
    from hybridcert.models.checkpoints import demo_filter_config

    return demo_filter_config()


def demo_checkpoint(log: Callable[[str], None] = print) -> Path:
    """The demo checkpoint folder (the full benchmark's keep-0.75 seed-0 filter), trained
    first if absent."""
    from hybridcert.models.checkpoints import demo_checkpoint as checkpoint

    return checkpoint(log)


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
