"""A tiny base classifier for run tests (importable as an entry point)."""

import os
import time


def factory():
    delay = float(os.environ.get("TOY_MODEL_DELAY", "0"))

    def model(batch):
        if delay:
            time.sleep(delay)
        score = batch["image"].flatten(1).mean(1) + 0.02 * (batch["text"] > 2000).sum(1)
        return (score > 0.6).long()

    return model


def broken_factory():
    def model(batch):
        raise RuntimeError("shape mismatch in layer 3")

    return model
