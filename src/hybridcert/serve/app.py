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

Every request's ``Host`` must be on the allow-list (400 else) and a POST that carries an
``Origin`` must come from this origin or an allowed one (403 else): a web page the operator
visits can neither drive the service nor, by DNS rebinding, read its answers (:class:`Guard`).

Slow clients are closed: a request's headers must arrive within ``header_timeout_s`` (408 if
part of them came, a silent close of an idle connection else; :func:`slow_client_protocol`)
and its body within ``body_timeout_s`` after them (408, :class:`Guard`).  Every response to a
``/v1/moderate`` request whose headers were read is counted in ``hybridcert_requests_total``
whatever ends it, and every response carries the page's security headers
(:data:`SECURITY_HEADERS`).
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
from starlette.requests import ClientDisconnect

from hybridcert.sequential.driver import JobTimeout, QueueFull, ShuttingDown
from hybridcert.serve.service import InputError, ModerationService

log = logging.getLogger("hybridcert.serve")
#: How often a waiting request checks whether its client went away (seconds).
POLL_S = 0.25
FIELDS = ("image", "text", "id")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
MODERATE = "/v1/moderate"
#: Sent with every response: the page loads its own script, style and the chosen image (a
#: blob: URL) only, talks to this origin only, and may not be framed or sniffed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob: data:; connect-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The field a refusal of the HTTP layer names, by status.
ROUTING_FIELDS = {404: "path", 405: "method"}
#: Set in a request's scope by the protocol when it answered the request itself (a malformed
#: body: 400), so that the count records what was sent.
WIRE_STATUS = "hybridcert.wire_status"
#: Host names every service accepts (besides the address it listens on), bare and with its
#: port.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_PORTS = {"http": 80, "https": 443}


def allowed_host_list(bind_host: str, port: int, extra: tuple[str, ...] = ()
                      ) -> frozenset[str] | None:
    """The ``Host`` header values a service bound to ``bind_host:port`` accepts (lower case):
    the bind address, ``localhost``, ``127.0.0.1`` and ``[::1]``, and each name of ``extra``,
    each bare and with ``:port`` (a name given with a port: as given).  None (any host) when
    ``extra`` holds ``*``."""
    if "*" in extra:
        return None
    bind = f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
    names = set()
    for name in (bind, *LOOPBACK_HOSTS, *extra):
        name = name.strip().lower()
        if _split_port(name)[1] is not None:
            names.add(name)
        else:
            names.update((name, f"{name}:{port}"))
    return frozenset(names)


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an origin or URL, lower case, without the scheme's default
    port; None when it is not an http(s) origin (``null``, a path, no host)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, DEFAULT_PORTS[scheme])
                                   else "")


def _split_port(host: str) -> tuple[str, int | None]:
    """(name, port) of a ``Host`` value (``[::1]:8000``, ``localhost``)."""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and (not name.startswith("[") or name.endswith("]")) \
            and (name.startswith("[") or ":" not in name):
        return name, int(port)
    return host, None


def error(status: int, field: str | None, message: str, headers: dict | None = None
          ) -> JSONResponse:
    """A JSON refusal ``{"error": message, "field": field}``."""
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(service: ModerationService, allowed_hosts: frozenset[str] | None
               ) -> FastAPI:
    """The FastAPI application of a service (its lifespan starts and drains the driver);
    ``allowed_hosts``: the ``Host`` values it answers (:func:`allowed_host_list`; None:
    any)."""

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
    app.add_middleware(Guard, service=service, allowed_hosts=allowed_hosts)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, ROUTING_FIELDS.get(exc.status_code), str(exc.detail),
                     getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # A backstop: the Guard answers (and counts) every exception of a route itself.
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

    @app.post(MODERATE)
    async def moderate(request: Request):
        return await _moderate(request, time.perf_counter())

    async def _moderate(request: Request, started: float) -> Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        if not service.driver.accepting:
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
        except Exception as err:  # the model failed on this request's rows (alone)
            log.error("model failure: %s: %s", type(err).__name__, err)
            return error(500, "model", f"the model failed on this request's input "
                         f"({_one_line(err)}); the other requests are not affected")
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
        # Any field may arrive as a file part (each refused below, naming it): the parser's
        # own limit would answer them all "Too many files".
        form = await request.form(max_files=len(FIELDS), max_fields=len(FIELDS),
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


class BodyTimeout(Exception):
    """The client did not send its request body in time."""


class Guard:
    """ASGI middleware around every route: the body read deadline, the security headers,
    the count of every ``/v1/moderate`` response, and one answer for what a route did not
    answer itself (a client gone: 499, logged as info; any other exception: 500 JSON and
    one log line, the traceback at debug level only).

    It also refuses, before any route runs, a request whose ``Host`` is not on the
    allow-list (400, field ``host``) and a POST whose ``Origin`` is neither the request's own
    (same scheme, host and port) nor an allowed one (403, field ``origin``).

    Parameters
    ----------
    app : ASGI application
    service : ModerationService
        Its ``settings.body_timeout_s``, ``settings.allowed_origins`` and ``metrics``.
    allowed_hosts : frozenset of str, optional
        Accepted ``Host`` values, lower case (:func:`allowed_host_list`); None: any.
    """

    def __init__(self, app, service: ModerationService,
                 allowed_hosts: frozenset[str] | None = None):
        self.app = app
        self.timeout = service.settings.body_timeout_s
        self.metrics = service.metrics
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = frozenset(origin_of(o) for o in
                                         service.settings.allowed_origins)
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    def refusal(self, scope) -> JSONResponse | None:
        """The 400/403 of a request from a host or origin not allowed (None: allowed)."""
        headers = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        host = headers.get("host", "").strip().lower()
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            shown = repr(host[:100]) if host else "no Host header"
            return error(400, "host", f"this service does not answer for host {shown}; "
                         f"the operator can allow it with --allowed-host")
        origin = headers.get("origin")
        if scope.get("method") != "POST" or origin is None:
            return None
        scheme = scope.get("scheme", "http")
        own = origin_of(f"{scheme}://{host}") if host else None
        sent = origin_of(origin)
        if sent is not None and (sent == own or sent in self.allowed_origins):
            return None
        return error(403, "origin", f"requests from origin {origin[:100]!r} are refused: "
                     f"only this service's own page may post (the operator can allow an "
                     f"origin with --allowed-origin)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        status: list[int] = []
        body_in = False

        async def timed_receive():
            nonlocal body_in
            if body_in:                  # later reads only watch for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_in = True
            return message

        async def guarded_send(message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        try:
            if (refused := self.refusal(scope)) is not None:
                await refused(scope, receive, guarded_send)
                return
            await self.app(scope, timed_receive, guarded_send)
        except BodyTimeout:
            log.info("closed a client that sent no complete body within %g s", self.timeout)
            self.metrics.read_timeouts.labels("body").inc()
            if not status:
                await error(408, "body", f"the request body did not arrive within "
                            f"{self.timeout:g} s", {"Connection": "close"}
                            )(scope, receive, guarded_send)
        except ClientDisconnect:
            if not status and WIRE_STATUS in scope:      # answered by the protocol itself
                status.append(scope[WIRE_STATUS])
            else:
                log.info("client closed the connection before its request was read")
            if not status:
                status.append(499)
        except Exception as err:  # noqa: BLE001 - one line in the log, a JSON 500 out
            log.error("internal error on %s: %s: %s", scope.get("path"), type(err).__name__,
                      err, exc_info=log.isEnabledFor(logging.DEBUG))
            if not status:
                await error(500, None, "internal error")(scope, receive, guarded_send)
        finally:
            if scope.get("path") == MODERATE:
                self.metrics.requests.labels(str(status[0] if status else 499)).inc()


def slow_client_protocol(header_timeout_s: float, on_timeout=None) -> type:
    """uvicorn's h11 protocol with a header deadline and JSON 400s.

    A connection whose next request's headers are not complete ``header_timeout_s`` after it
    opened (or after its previous response) is closed: with a 408 when part of the request
    came, silently when no byte of it did (an idle keep-alive connection: a client reusing it
    would take an unsolicited 408 for the answer to its next request).  ``on_timeout(phase)``
    is then called with ``"headers"`` or ``"idle"``.  uvicorn's own keep-alive timeout does
    not do this: any byte re-arms it, and a new connection has none.

    A request uvicorn cannot parse gets a JSON 400 naming ``headers`` (its request line or
    headers) or ``body`` (e.g. a bad chunk); the latter is noted in the request's scope
    (:data:`WIRE_STATUS`) so that :class:`Guard` counts the 400 that was sent."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = json.dumps({"error": f"the request headers did not arrive within "
                                f"{header_timeout_s:g} s", "field": "headers"},
                      separators=(",", ":")).encode()
    late = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)

    class SlowClientProtocol(H11Protocol):
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = None
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _headers_late(self) -> None:
            self._header_timer = None
            # IDLE: no complete request line and headers since the connection opened or its
            # last response (a request being read or answered is the body deadline's).
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if not self.conn.trailing_data[0]:       # no byte of a next request: just close
                log.debug("closed a connection idle for %g s", header_timeout_s)
                if on_timeout is not None:
                    on_timeout("idle")
                self.transport.close()
                return
            log.info("closed a client that sent no complete headers within %g s",
                     header_timeout_s)
            if on_timeout is not None:
                on_timeout("headers")
            self.transport.write(late)
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            cycle = self.cycle
            in_body = cycle is not None and cycle.scope is self.scope \
                and not cycle.response_complete
            if in_body and cycle.response_started:   # too late for an answer of our own
                self.transport.close()
                return
            field = "body" if in_body else "headers"
            if in_body:
                self.scope[WIRE_STATUS] = 400
            payload = json.dumps({"error": f"the request's {field} cannot be parsed as "
                                           f"HTTP/1.1", "field": field},
                                 separators=(",", ":")).encode()
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(payload)).encode()),
                       *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
            try:
                for event in (h11.Response(status_code=400, headers=headers,
                                           reason=b"Bad Request"),
                              h11.Data(data=payload), h11.EndOfMessage()):
                    self.transport.write(self.conn.send(event))
            except h11.LocalProtocolError:            # a response was already sent
                pass
            self.transport.close()

    return SlowClientProtocol


def _one_line(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` of an exception, at most ``limit`` characters."""
    lines = str(err).strip().splitlines()
    text = type(err).__name__ + (f": {lines[0]}" if lines else "")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _asset(name: str) -> bytes:
    return resources.files("hybridcert.serve").joinpath("static").joinpath(name).read_bytes()


def server_config(service: ModerationService, host: str = "127.0.0.1", port: int = 8000,
                  log_level: str = "info"):
    """The uvicorn configuration of a service: its app (answering the hosts of
    :func:`allowed_host_list` for ``host:port`` and ``settings.allowed_hosts``), the h11
    protocol with the header deadline, and a graceful shutdown of ``timeout_s`` + 5 s."""
    import uvicorn

    def timed_out(phase: str) -> None:
        service.metrics.read_timeouts.labels(phase).inc()

    protocol = slow_client_protocol(service.settings.header_timeout_s, timed_out)
    hosts = allowed_host_list(host, port, service.settings.allowed_hosts)
    return uvicorn.Config(create_app(service, hosts), host=host, port=port,
                          log_level=log_level,
                          http=protocol,
                          timeout_graceful_shutdown=int(service.settings.timeout_s) + 5,
                          lifespan="on")


def run_server(service: ModerationService, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info") -> None:
    """Serve until SIGTERM or Ctrl-C: then new requests are refused (503, listening socket
    closed) and the ones in flight finish before the process exits."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            service.ready = False
            service.driver.refuse_new()
            super().handle_exit(sig, frame)

    Server(server_config(service, host, port, log_level)).run()
