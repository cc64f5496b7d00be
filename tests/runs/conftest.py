import json
import os

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def jsonl_dataset(tmp_path):
    """Twelve image+caption rows with labels, as a user's own dataset would look."""
    rng = np.random.default_rng(0)
    rows = []
    texts = ["i will hurt you with this", "we bake a cake together", "lovely day at the park",
             "i want to attack them tonight"]
    for i in range(12):
        pixels = (rng.uniform(0.2, 0.9) * 255 * np.ones((32, 32, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        rows.append({"id": f"row{i}", "image": f"img{i}.png", "text": texts[i % 4],
                     "label": int(i % 3 == 0)})
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture(scope="module")
def ray_cluster():
    """One local 2-CPU Ray cluster shared by the module's Ray tests (start-up is slow)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
