import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def rows_file(tmp_path):
    """Write rows ``{id: text}`` with 40x48 images; returns a function of the texts."""

    def write(texts, name="data.jsonl", size=(48, 40)):
        rng = np.random.default_rng(0)
        rows = []
        for i, (row_id, text) in enumerate(texts.items()):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                tmp_path / f"{i}.png")
            rows.append({"id": row_id, "image": f"{i}.png", "text": text, "label": i % 2})
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write
