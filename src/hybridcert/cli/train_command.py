"""``hybridcert train``: the demo safety filter trained under the noise that certifies it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def train(
    out: Annotated[Path, Opt("--out", help="Checkpoint folder to write.")],
    sigma: Annotated[float, Opt("--sigma", help="Gaussian noise on the image (> 0), pixels in "
                                "[0, 1].")] = 0.25,
    keep_prob: Annotated[float, Opt("--keep-prob", help="Token keep probability of the "
                                    "substitution noise.")] = 0.5,
    modalities: Annotated[str, Opt("--modalities", help="image, text or image,text.")]
    = "image,text",
    text_layers: Annotated[int, Opt("--text-layers", help="Pretrained MiniLM layers kept "
                                    "(1-6).")] = 1,
    epochs: Annotated[int, Opt("--epochs")] = 8,
    n_train: Annotated[int, Opt("--n-train", help="Training records.")] = 6000,
    batch_size: Annotated[int, Opt("--batch-size")] = 64,
    seed: Annotated[int, Opt("--seed", help="Seed of the data, initialisation, batch order "
                             "and training noise.")] = 0,
    votes: Annotated[int, Opt("--votes", help="Noisy copies of the validation majority "
                              "vote.")] = 9,
    data_cache: Annotated[Path, Opt("--data-cache")] = Path("artifacts/data"),
) -> None:
    """Train the image+text safety filter with the same hybrid noise that certifies it, and
    print its per-class validation accuracy: clean, under one noisy copy, and by majority vote."""
    from hybridcert.datasets import safety
    from hybridcert.models import fusion, training
    from hybridcert.noise import Gaussian, Substitution

    chosen = tuple(m.strip() for m in modalities.split(","))
    if not chosen or any(m not in ("image", "text") for m in chosen):
        raise ValueError(f"--modalities must name image and/or text, got {modalities!r}")
    for name, value, low in (("--epochs", epochs, 1), ("--n-train", n_train, 4),
                             ("--batch-size", batch_size, 1), ("--votes", votes, 0)):
        if value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    Gaussian(sigma)                                  # validate before the long part
    Substitution(keep_prob, safety.vocabulary().size)
    config = fusion.FilterConfig(chosen, text_layers=text_layers, sigma=sigma,
                                 keep_prob=keep_prob, seed=seed)
    train_data = safety.load_split("train", n_train, seed, data_cache)
    val_data = safety.load_split("val", None, seed, data_cache)
    model = training.train(config, train_data, epochs=epochs, batch_size=batch_size,
                           log=typer.echo)
    fusion.save(model, out)
    metrics = training.evaluate(model, val_data, votes=votes)
    for mode in ("clean", "noisy", "smoothed"):
        if mode in metrics:
            m = metrics[mode]
            typer.echo(f"validation {mode:8s}: safe recall {m['safe']:.3f}, unsafe recall "
                       f"{m['unsafe']:.3f}, balanced {m['balanced']:.3f}")
    typer.echo(f"checkpoint written to {out} (certify it with --checkpoint {out})")
