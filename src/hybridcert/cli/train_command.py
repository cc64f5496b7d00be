"""``hybridcert train``: the safety filter trained under the certification noise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")],
    sigma: Annotated[float, typer.Option("--sigma", help="Gaussian noise on the image (> 0).")]
    = 0.25,
    keep_prob: Annotated[float, typer.Option("--keep-prob", help="Token keep probability.")]
    = 0.2,
    modalities: Annotated[str, typer.Option("--modalities", help="image, text or image,text.")]
    = "image,text",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 20,
    n_train: Annotated[int, typer.Option("--n-train", min=10)] = 4000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    data_cache: Annotated[Path, typer.Option("--data-cache")] = Path("artifacts/data"),
) -> None:
    """Train the image+text safety filter with the same hybrid noise that certifies it."""
    from hybridcert.data import safety
    from hybridcert.models import fusion, training
    from hybridcert.noise import Gaussian, Substitution

    chosen = tuple(m.strip() for m in modalities.split(","))
    if not chosen or any(m not in ("image", "text") for m in chosen):
        raise ValueError(f"--modalities must name image and/or text, got {modalities!r}")
    Gaussian(sigma)                                  # validate before the long part
    Substitution(keep_prob, safety.vocabulary().size)
    data = safety.splits(n_train, 500, 500, seed, data_cache)
    config = fusion.FilterConfig(chosen, sigma=sigma, keep_prob=keep_prob, seed=seed)
    model = training.train(config, data["train"], epochs=epochs, log=typer.echo)
    metrics = training.evaluate(model, data["val"])
    fusion.save(model, out)
    typer.echo(f"validation: clean accuracy {metrics['clean_accuracy']:.3f}, under noise "
               f"{metrics['noisy_accuracy']:.3f}; checkpoint written to {out}")
