"""Unimodal probes of the safety dataset: can one modality alone predict the label?

Trains, on the train split, (1) a bag-of-words logistic regression on the captions, (2) the
pretrained MiniLM (all six layers) fine-tuned on captions alone, (3) the filter's CNN on
images alone, and (4) the image+text filter on both, all on clean inputs; prints balanced
accuracy on the test split (overall and per slice: seen sprites, held-out sprites, held-out
Noto style) beside the Bayes ceilings of the generating distribution, with each neural
probe's clean training accuracy over its last three epochs (flat: trained to convergence).
Goal: every unimodal probe <= 65 %, the multimodal model clearly above.

    .venv/bin/python benchmarks/probes.py [--epochs-text 2] [--epochs-image 6]
        [--epochs-both 3] [--text-layers 6] [--n-train-neural 6000]
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from hybridcert.datasets import safety
from hybridcert.models import fusion, training


def _row(name: str, pred: np.ndarray, test: safety.SafetyData, seconds: float,
         train_acc: str = "") -> str:
    cells = [100 * training.class_metrics(pred, test.labels)["balanced"]]
    for part in ("seen", "heldout", "noto"):
        mask = test.meta["slice"] == part
        cells.append(100 * training.class_metrics(pred[mask], test.labels[mask])["balanced"])
    m = training.class_metrics(pred, test.labels)
    return (f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) +
            f" | {100 * m['safe']:.1f} / {100 * m['unsafe']:.1f} | {train_acc} | {seconds:.0f} |")


def bag_of_words(train: safety.SafetyData, val: safety.SafetyData, test: safety.SafetyData,
                 ngrams: tuple[int, int]) -> np.ndarray:
    """Logistic regression on word counts, C chosen on the validation split."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(ngram_range=ngrams, token_pattern=r"[^ ]+")
    x_train = vectorizer.fit_transform(train.texts)
    best = None
    for c in (0.01, 0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(x_train, train.labels)
        score = float(np.mean(clf.predict(vectorizer.transform(val.texts)) == val.labels))
        if best is None or score > best[0]:
            best = (score, clf)
    return best[1].predict(vectorizer.transform(test.texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-text", type=int, default=2)
    parser.add_argument("--epochs-image", type=int, default=6)
    parser.add_argument("--epochs-both", type=int, default=3)
    parser.add_argument("--text-layers", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-train-neural", type=int, default=6000,
                        help="training records for the three neural probes")
    parser.add_argument("--cache", type=Path, default=Path("artifacts/data"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = safety.splits(cache=args.cache)
    train, val, test = data["train"], data["val"], data["test"]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; safety v{safety.VERSION}: train {len(train)}, val "
          f"{len(val)}, test {len(test)} (unsafe share {test.labels.mean():.3f})")
    rows = ["| probe | test | seen | held-out sprites | Noto style | recall safe / unsafe "
            "| train accuracy, last 3 epochs | seconds |", "|---|---|---|---|---|---|---|---|"]
    ceilings = {part: safety.unimodal_ceilings(part) for part in ("seen", "heldout", "noto")}
    for modality in ("text", "image"):
        parts = [100 * ceilings[p][modality] for p in ("seen", "heldout", "noto")]
        overall = 0.5 * parts[0] + 0.25 * parts[1] + 0.25 * parts[2]
        rows.append(f"| Bayes ceiling, {modality} alone | {overall:.1f} | " +
                    " | ".join(f"{c:.1f}" for c in parts) + " | | | |")
    for ngrams in ((1, 1), (1, 2)):
        start = time.perf_counter()
        pred = bag_of_words(train, val, test, ngrams)
        rows.append(_row(f"bag of words {ngrams}, logistic regression (text)", pred, test,
                         time.perf_counter() - start))
        print(rows[-1], flush=True)
    probes = [(("text",), args.epochs_text, f"MiniLM {args.text_layers} layers fine-tuned (text)"),
              (("image",), args.epochs_image, "CNN (image)"),
              (("image", "text"), args.epochs_both, "image+text filter, 1 MiniLM layer "
                                                      "(both, clean)")]
    for modalities, epochs, name in probes:
        layers = args.text_layers if modalities == ("text",) else 1
        config = fusion.FilterConfig(modalities, text_layers=layers, seed=0)
        start = time.perf_counter()
        accuracy: list[float] = []

        def log(line: str, accuracy=accuracy) -> None:
            print("  " + line, flush=True)
            accuracy.append(float(re.search(r"train accuracy ([0-9.]+)", line).group(1)))

        model = training.train(config, train.subset(slice(0, args.n_train_neural)),
                               epochs=epochs, noised=False, log=log)
        pred = training.predict(model, test)
        last = " / ".join(f"{100 * a:.1f}" for a in accuracy[-3:])
        rows.append(_row(name, pred, test, time.perf_counter() - start, last))
        print(rows[-1], flush=True)
    print("\nBalanced accuracy (%) on the test split (constant classifier: 50 %):\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
