"""A live service on 127.0.0.1 for the HTTP tests (uvicorn in a thread of the test process)."""

import base64
import io
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from hybridcert.runs.config import RunConfig
from hybridcert.runs.runner import plan
from hybridcert.serve.app import server_config
from hybridcert.serve.service import ModerationService, ServeSettings
from tests.serve.toy_model import factory

TARGETS = [[0.0, 0], [0.1, 0], [0.0, 1], [0.1, 1]]
KEY = "test-key-0123456789abcdef"


def toy_config(**overrides) -> RunConfig:
    # allow_empty_text: the ambiguous test input's text ("unknown words") has no noisable
    # token, so its P(unsafe) is exactly 1/2 (test_http checks the refusal without it).
    settings = dict(model="tests.serve.toy_model:factory", sigma=0.25, keep_prob=0.8,
                    mode="decision", targets=TARGETS, n=10_000, alpha=0.001, seed=7,
                    allow_empty_text=True)
    settings.update(overrides)
    return RunConfig(**settings)


def png(value: float, size=(8, 8), kind="PNG") -> bytes:
    """A uniform grey image file of brightness ``value`` in [0, 1]."""
    pixels = np.full((size[1], size[0], 3), round(value * 255), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, kind)
    return out.getvalue()


def png_even(size=(8, 8)) -> bytes:
    """Half the pixels 178, half 179: mean brightness 0.7 exactly, the toy model's boundary,
    so P(unsafe) = 1/2 under the noise (no decision can be certified)."""
    pixels = np.full((size[1], size[0], 3), 178, dtype=np.uint8)
    pixels[::2] = 179
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_service(settings: ServeSettings | None = None, delay: float = 0.0,
                 adapter=None, **config):
    """Yield (base URL, service) of a server on 127.0.0.1 running the toy model."""
    service = ModerationService(plan(toy_config(**config), batch_size=256,
                                     adapter=adapter or factory(delay)),
                                settings or ServeSettings())
    port = free_port()
    server = uvicorn.Server(server_config(service, "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    else:
        raise RuntimeError("the test server did not start")
    try:
        yield url, service
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def toy_server():
    with live_service() as (url, service):
        yield url, service


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    with live_service(ServeSettings(api_keys=(KEY,))) as (url, service):
        yield url, service
