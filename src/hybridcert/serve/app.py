"""The HTTP layer: FastAPI routes over a :class:`~hybridcert.serve.service.ModerationService`.

Endpoints (the contract tools depend on; docs/SERVICE.md):

* ``GET /healthz`` -> 200 ``{"status": "ok"}`` once the model is loaded (503 while shutting
  down);
* ``POST /v1/moderate`` with JSON ``{"image": base64 PNG/JPEG, "text": str, "id"?: str}`` or
  a multipart form with the same fields -> 200 with the decision, the certified targets, the
  region, ``p_lower``, ``queries`` and ``latency_ms``; refusals are 4xx JSON
  ``{"error": message, "field": name}``; 503 (+ ``Retry-After``) when the queue is full or the
  service is shutting down; 504 when the request ran past its timeout;
* ``GET /v1/info`` -> the service's configuration (targets, alpha, limits; no secrets);
* ``GET /metrics`` -> Prometheus text format;
* ``GET /`` -> the page (plain HTML and JavaScript, no framework).

With API keys, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer <key>`` (401 else).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hybridcert.serve.engine import JobTimeout, QueueFull, ShuttingDown
from hybridcert.serve.service import InputError, ModerationService

log = logging.getLogger("hybridcert.serve")
#: How often a waiting request checks whether its client went away (seconds).
POLL_S = 0.25
FIELDS = ("image", "text", "id")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


def error(status: int, field: str | None, message: str, headers: dict | None = None
          ) -> JSONResponse:
    """A JSON refusal ``{"error": message, "field": field}``."""
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(service: ModerationService) -> FastAPI:
    """The FastAPI application of a service (its lifespan starts and drains the engine)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.close, service.settings.timeout_s + 5)

    app = FastAPI(title="hybridcert moderation", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.service = service
    limits = service.settings.limits
    metrics = service.metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, None, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return error(500, None, "internal error")

    def unauthorized(request: Request) -> JSONResponse | None:
        if service.authorized(request.headers.get("authorization")):
            return None
        return error(401, "authorization", "missing or wrong API key: send "
                     "'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    async def healthz():
        if service.ready:
            return {"status": "ok"}
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request):
        if (refused := unauthorized(request)) is not None:
            return refused
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info")
    async def info(request: Request):
        if (refused := unauthorized(request)) is not None:
            return refused
        return service.describe()

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(_asset("index.html"))

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in STATIC:
            return error(404, None, "Not Found")
        return Response(_asset(name), media_type=STATIC[name])

    @app.post("/v1/moderate")
    async def moderate(request: Request):
        started = time.perf_counter()
        response = await _moderate(request, started)
        metrics.requests.labels(str(response.status_code)).inc()
        return response

    async def _moderate(request: Request, started: float) -> Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        if not service.engine.accepting:
            metrics.rejected.inc()
            return error(503, None, "the service is shutting down", {"Retry-After": "5"})
        try:
            image, text, client_id = await _fields(request, limits)
            prepared = await run_in_threadpool(service.prepare, image, text, client_id)
        except InputError as err:
            return error(err.status, err.field, err.message)
        try:
            job = service.submit(prepared)
        except QueueFull as err:
            metrics.rejected.inc()
            return error(503, None, f"busy: {err}; retry later", {"Retry-After": "1"})
        except ShuttingDown:
            metrics.rejected.inc()
            return error(503, None, "the service is shutting down", {"Retry-After": "5"})
        waiting = asyncio.wrap_future(job.future)
        waiting.add_done_callback(_retrieve)      # a dropped job's error is expected
        deadline = started + service.settings.timeout_s
        try:
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    job.cancel()
                    raise JobTimeout("timeout", job.rule.queries)
                done, _ = await asyncio.wait({waiting}, timeout=min(POLL_S, left))
                if done:
                    outcome = waiting.result()
                    break
                if await request.is_disconnected():
                    job.cancel()
                    return error(499, None, "client closed the request")
        except JobTimeout as err:
            metrics.timeouts.inc()
            return error(504, None, f"no decision within {service.settings.timeout_s:g} s "
                         f"(stopped after {err.queries} base-model evaluations); treat it as "
                         f"an abstention or retry later")
        except asyncio.CancelledError:
            job.cancel()
            raise
        except Exception as err:  # the model failed on a batch holding this request
            log.error("model failure: %s: %s", type(err).__name__, err)
            return error(500, None, "the model failed on this request")
        answer = await run_in_threadpool(service.answer, prepared, outcome, started)
        return JSONResponse(answer)

    return app


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def _fields(request: Request, limits) -> tuple[bytes, object, object]:
    """(image bytes, text, id) from a JSON or multipart body (raises InputError)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", "multipart/form-data"):
        raise InputError(415, "content-type", f"send application/json or multipart/form-data, "
                         f"got {kind or 'no content type'!r}")
    body = await _read_body(request, limits.max_body_bytes)
    if kind == "multipart/form-data":
        return await _form_fields(request, limits)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(400, "body", f"the body is not valid JSON ({err})") from None
    except RecursionError:
        raise InputError(400, "body", "the body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError(422, "body", "the body must be a JSON object with image and text")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InputError(422, unknown[0], f"unknown field(s) {unknown}; fields are "
                         f"image, text, id")
    for name in ("image", "text"):
        if name not in data:
            raise InputError(422, name, f"missing field {name!r}")
    encoded = data["image"]
    if not isinstance(encoded, str):
        raise InputError(422, "image", "image must be a base64 string (PNG or JPEG)")
    if encoded.startswith("data:"):
        head, sep, encoded = encoded.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InputError(422, "image", "image data URL must be base64 encoded")
    encoded = "".join(encoded.split())
    if len(encoded) > (limits.max_image_bytes * 4) // 3 + 4:
        raise InputError(413, "image", f"image is larger than the {limits.max_image_bytes:,} "
                         f"bytes allowed")
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(422, "image", "image is not valid base64") from None
    return image, data["text"], data.get("id")


async def _form_fields(request: Request, limits) -> tuple[bytes, object, object]:
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=1, max_fields=len(FIELDS),
                                  max_part_size=limits.max_body_bytes)
    except Exception as err:  # the multipart parser's refusals
        raise InputError(400, "body", f"the multipart body cannot be parsed ({err})") from None
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        raise InputError(422, unknown[0], f"unknown field(s) {unknown}; fields are "
                         f"image, text, id")
    for name in ("image", "text"):
        if name not in form:
            raise InputError(422, name, f"missing field {name!r}")
    upload, text, client_id = form["image"], form["text"], form.get("id")
    if not isinstance(upload, UploadFile):
        raise InputError(422, "image", "image must be a file upload (PNG or JPEG)")
    if not isinstance(text, str):
        raise InputError(422, "text", "text must be a form field, not a file")
    if client_id is not None and not isinstance(client_id, str):
        raise InputError(422, "id", "id must be a form field, not a file")
    image = await upload.read(limits.max_image_bytes + 1)
    await form.close()
    return image, text, client_id


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise InputError(413, "body", f"the body has {int(length):,} bytes, more than the "
                         f"{limit:,} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, "body", f"the body is larger than the {limit:,} bytes "
                             f"allowed")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body        # Starlette's cache: the form parser reads it from there
    return body


def _asset(name: str) -> bytes:
    return resources.files("hybridcert.serve").joinpath("static").joinpath(name).read_bytes()


def run_server(service: ModerationService, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info") -> None:
    """Serve until SIGTERM or Ctrl-C: then new requests are refused (503, listening socket
    closed) and the ones in flight finish before the process exits."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            service.ready = False
            service.engine.refuse_new()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(create_app(service), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(service.settings.timeout_s) + 5,
                            lifespan="on")
    Server(config).run()
