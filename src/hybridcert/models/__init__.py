"""Base models: the image+text safety filter and its checkpoints."""
