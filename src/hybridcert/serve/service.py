"""The moderation service without the web layer: request -> record -> batched sequential
decision -> JSON answer (+ audit row).

Requests decode through the model side only: the image through the model's
:class:`~hybridcert.adapters.ImageProcessor` (its size and resizing policy; safe decoding
limits), the text through its :class:`~hybridcert.blocks.TextEncoder`, then
``noise.prepare``.  The noise seed of a request is :func:`request_seed`: an HMAC, under a
server secret, of the decoded record the model sees (never of a client field), so a client
cannot re-draw the noise of an input by re-sending it (docs/SERVICE.md, "Repeated queries").
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import stat
import struct
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hybridcert.adapters import ImageError, ImageProcessor
from hybridcert.adapters.images import JPEG_MAGIC, PNG_MAGIC, header_size
from hybridcert.blocks.text import TextError
from hybridcert.blocks.tokens import TokenBlock
from hybridcert.runs.config import ConfigError
from hybridcert.runs.runner import Plan
from hybridcert.sequential.driver import Driver, Job, Outcome
from hybridcert.serve.audit import AuditLog
from hybridcert.serve.metrics import Metrics
from hybridcert.serve.rules import ABSTAIN_WORD, DecisionRules

#: Shortest API key accepted from a key file.
MIN_KEY_LENGTH = 16
#: Shortest seed key accepted from ``--seed-key-file`` (characters); a generated key has 32
#: random bytes.
MIN_SEED_KEY_LENGTH = 32


class InputError(ValueError):
    """A request the service refuses: HTTP ``status``, the offending ``field``, a message."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


@dataclass(frozen=True)
class Limits:
    """What a request may hold.

    Parameters
    ----------
    max_image_bytes : int
        Largest image file (bytes, after base64 decoding).
    max_image_pixels : int
        Largest image (width x height), checked from the header before decoding.
    max_text_chars : int
        Longest text (characters), checked before tokenization.
    max_id_chars : int
        Longest client ``id``.
    """

    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 16_000_000
    max_text_chars: int = 4096
    max_id_chars: int = 128

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: a base64 image, the text as JSON escapes, and slack."""
        return (self.max_image_bytes * 4) // 3 + 4 + 12 * self.max_text_chars + 64 * 1024


@dataclass
class ServeSettings:
    """How the service runs (the certificate's options are the RunConfig's).

    Parameters
    ----------
    batch_size : int
        Most noisy copies per forward pass (shared by concurrent requests).
    max_pending : int
        Most requests queued or running; more get 503 with ``Retry-After``.
    timeout_s : float
        Seconds a request may take; then it gets 504 and its copies stop being drawn.
    speculation : float, optional
        Spare rows of a batch go to running requests, up to this multiple of the copies each
        has drawn (fewer forward passes per decision at low load; decisions unchanged; see
        :class:`~hybridcert.sequential.driver.Driver`).  Default: 0 on a CPU, where every
        row costs its share of the forward pass, 1 on a GPU, where spare rows are nearly
        free.
    group_rows : int, optional
        Run each forward batch in slices of jobs whose texts have one attended length, each
        of at least this many rows (0: whole batches; see
        :class:`~hybridcert.sequential.driver.Driver`).  Default: 32 on a CPU, where a
        model that trims padding then runs mixed traffic as fast as one-input batches, 0 on
        a GPU, where a pass costs about the same for any length and slices add passes.
    limits : Limits
    api_keys : tuple of str
        Bearer keys; empty: no authentication.
    audit_path : Path, optional
        SQLite audit log (off when None).
    seed_key : bytes, optional
        The secret that keys every request's noise seed (:func:`request_seed`); None: 32
        random bytes drawn when the service is built (``secrets``).  Never logged nor shown.
    header_timeout_s : float
        Seconds a client has to send a request's headers (from the connection's start or the
        previous response); slower connections are closed.
    body_timeout_s : float
        Seconds a client has to send a request's body once its headers are in; slower ones
        get 408 and the connection is closed.
    allowed_hosts : tuple of str
        ``Host`` names answered besides the bind address, ``localhost``, ``127.0.0.1`` and
        ``[::1]`` (:func:`~hybridcert.serve.app.allowed_host_list`); ``*``: any.
    allowed_origins : tuple of str
        Origins (``scheme://host[:port]``) whose pages may POST besides the service's own.
    """

    batch_size: int = 256
    max_pending: int = 128
    timeout_s: float = 10.0
    speculation: float | None = None
    group_rows: int | None = None
    limits: Limits = field(default_factory=Limits)
    api_keys: tuple[str, ...] = ()
    audit_path: Path | None = None
    seed_key: bytes | None = field(default=None, repr=False)
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()


@dataclass
class Prepared:
    """A decoded request: the prepared record and its identity."""

    record: dict
    input_hash: str
    request_id: str
    seed: int
    notes: list[str]


def _read_secret(path: Path, option: str) -> bytes:
    """The bytes of a file of secrets, refused when missing, unreadable, or readable by its
    group or others (as ssh refuses an open private key)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{option} {path} not found") from None
    except OSError as err:
        raise ConfigError(f"{option} {path} cannot be read ({err.strerror})") from None
    if os.name == "posix" and mode & 0o044:
        raise ConfigError(f"{option} {path} is readable by other users (mode "
                          f"{stat.S_IMODE(mode):04o}); run 'chmod 600 {path}'")
    return data


def read_api_keys(path: str | Path) -> tuple[str, ...]:
    """Keys from a file, one per line (blank lines and ``#`` comments ignored), readable by
    its owner only."""
    path = Path(path)
    try:
        text = _read_secret(path, "--api-key-file").decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"--api-key-file {path} is not UTF-8 text ({err.reason})") from None
    keys = tuple(line.strip() for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#"))
    if not keys:
        raise ConfigError(f"--api-key-file {path} holds no key (one key per line)")
    short = sum(len(k) < MIN_KEY_LENGTH for k in keys)
    if short:
        raise ConfigError(f"--api-key-file {path}: {short} key(s) shorter than "
                          f"{MIN_KEY_LENGTH} characters")
    if any(any(c.isspace() for c in k) for k in keys):
        raise ConfigError(f"--api-key-file {path}: a key may not contain spaces")
    return keys


def read_seed_key(path: str | Path) -> bytes:
    """The seed key held in a file (surrounding whitespace stripped; at least
    :data:`MIN_SEED_KEY_LENGTH` characters; readable by its owner only: a file group or
    others may read is refused), e.g. ``(umask 077; python -c "import secrets;
    print(secrets.token_hex(32))" > seed.key)``."""
    path = Path(path)
    key = _read_secret(path, "--seed-key-file").strip()
    if len(key) < MIN_SEED_KEY_LENGTH:
        raise ConfigError(f"--seed-key-file {path} holds {len(key)} characters; a seed key "
                          f"needs at least {MIN_SEED_KEY_LENGTH} (e.g. the 64 hex digits of "
                          f"secrets.token_hex(32))")
    return key


def record_digest(record: dict) -> bytes:
    """SHA-256 of what the model is given for an input: every block of a prepared record
    (name, kind, dtype, shape and the exact bytes of its values), in name order.

    Two requests that decode to the same record (the same pixels after the model's image
    processor, the same token ids, noised positions and attention) have the same digest,
    whatever their file encoding, metadata, JSON or multipart form, or spelling of the text."""
    digest = hashlib.sha256(b"hybridcert-record-v1\0")

    def tensor(tag: bytes, value) -> None:
        if value is None:
            digest.update(tag + b":none\0")
            return
        value = torch.as_tensor(value).detach().cpu().contiguous()
        digest.update(tag + f":{value.dtype}:{tuple(value.shape)}\0".encode())
        digest.update(value.numpy().tobytes())

    for name in sorted(record):
        value = record[name]
        digest.update(struct.pack("<Q", len(name.encode())) + name.encode())
        if isinstance(value, TokenBlock):
            tensor(b"ids", value.ids)
            tensor(b"noisable", value.noisable)
            tensor(b"attention", value.attention)
        elif isinstance(value, torch.Tensor):
            tensor(b"tensor", value)
        else:
            raise TypeError(f"record block {name!r} is a {type(value).__name__}: the seed "
                            f"digest takes tensors and token blocks")
    return digest.digest()


def request_seed(key: bytes, run_seed: int, record: dict) -> int:
    """The noise seed of a request: ``HMAC-SHA256(key, "hybridcert-serve-seed-v1\\0" + run
    seed (8 bytes, little-endian) + record_digest(record))``, its first 8 bytes little-endian
    masked to 31 bits (the range of ``input_seed``).

    It depends on the input the model sees and on the server's secret ``key`` only: no client
    field picks it, the same input always gets it, and without the key it cannot be
    predicted, so a client can neither choose nor re-draw the noise of its decision."""
    message = (b"hybridcert-serve-seed-v1\0" + struct.pack("<q", int(run_seed))
               + record_digest(record))
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "little") & 0x7FFF_FFFF


def input_hash(image_bytes: bytes, text: str) -> str:
    """SHA-256 of a request's content: ``sha256("hybridcert-input-v1\\0" + sha256(image
    file bytes) + sha256(text as UTF-8))`` in hex (recomputable from the files)."""
    digest = hashlib.sha256(b"hybridcert-input-v1\0")
    digest.update(hashlib.sha256(image_bytes).digest())
    digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()


def model_fingerprint(model) -> str:
    """SHA-256 of a torch module's parameters and buffers (by name), or of its type name."""
    digest = hashlib.sha256()
    if isinstance(model, torch.nn.Module):
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    else:
        digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    return digest.hexdigest()


class ModerationService:
    """Certified moderation of image + text requests.

    Parameters
    ----------
    plan : Plan
        ``runs.runner.plan(config, device, batch_size)`` of a decision-mode configuration.
    settings : ServeSettings
    """

    def __init__(self, plan: Plan, settings: ServeSettings | None = None):
        self.plan = plan
        self.config = plan.config
        self.settings = settings or ServeSettings()
        self.rules = DecisionRules(plan.config, plan.noise)
        self.image_block, self.text_block = _blocks(plan)
        self.processor = service_processor(plan, self.image_block)
        self.encoder = plan.adapter.text[self.text_block]
        self.metrics = Metrics(self.settings.batch_size)
        on_cpu = plan.classifier.base.device.type == "cpu"
        speculation = self.settings.speculation
        if speculation is None:
            speculation = 0.0 if on_cpu else 1.0
        group_rows = self.settings.group_rows
        if group_rows is None:
            group_rows = 32 if on_cpu else 0
        self.driver = Driver(plan.classifier, self.settings.batch_size,
                                     self.settings.max_pending, speculation, group_rows,
                                     on_batch=self.metrics.on_batch)
        self.metrics.queue_depth.set_function(lambda: self.driver.pending)
        self._keys = [hashlib.sha256(k.encode()).digest() for k in self.settings.api_keys]
        self._seed_key = self.settings.seed_key or secrets.token_bytes(32)
        self.model_id = f"{plan.adapter.name}@{model_fingerprint(plan.adapter.model)[:16]}"
        self.config_hash = self.config.digest()
        self.class_names = list(plan.adapter.class_names) if plan.adapter.class_names else None
        self.audit = AuditLog(self.settings.audit_path) if self.settings.audit_path else None
        self.ready = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.driver.start()
        self.ready = True

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the running ones, write the audit log."""
        self.ready = False
        self.driver.close(drain=True, timeout=timeout)
        if self.audit is not None:
            self.audit.close()

    # -- authentication --------------------------------------------------------------------
    @property
    def auth_required(self) -> bool:
        return bool(self._keys)

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header holds ``Bearer <a configured key>``; every key
        is compared (SHA-256 digests, constant time) whatever matches."""
        if not self._keys:
            return True
        scheme, _, token = (header or "").partition(" ")
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
        match = False
        for key in self._keys:
            match |= hmac.compare_digest(given, key)
        return match and scheme.lower() == "bearer"

    # -- requests --------------------------------------------------------------------------
    def prepare(self, image: bytes, text, client_id=None) -> Prepared:
        """Decode and check a request (raises :class:`InputError`)."""
        limits = self.settings.limits
        if client_id is not None:
            _check_id(client_id, limits.max_id_chars)
        if not isinstance(text, str):
            raise InputError(422, "text", f"text must be a string, got {_json_kind(text)}")
        if len(text) > limits.max_text_chars:
            raise InputError(413, "text", f"text has {len(text)} characters, more than the "
                             f"{limits.max_text_chars} allowed")
        tensor, notes = self._image(image)
        try:
            tokens, cut = self.encoder.encode_reporting(text)
        except TextError as err:
            raise InputError(422, "text", str(err)) from None
        if cut:
            notes.append(f"text cut to {self.encoder.max_length} tokens")
        if self.config.strict and notes:
            raise InputError(422, "image" if not cut else "text",
                             f"{notes[0]} (the service is strict: no change to the input)")
        try:
            record = self.plan.classifier.validate({self.image_block: tensor,
                                                    self.text_block: tokens})
        except ValueError as err:
            where = "text" if self.text_block in str(err) else "image"
            raise InputError(422, where, str(err)) from None
        noised = {b.name for b in self.plan.noise.noised_tokens}
        if self.text_block in noised and not bool(record[self.text_block].noisable.any()):
            if not self.config.allow_empty_text:
                raise InputError(422, "text", "the text has no noisable token (empty, or only "
                                 "unknown or special tokens), so a certificate would cover the "
                                 "image alone; this service refuses such texts (serve "
                                 "--allow-empty-text certifies them so, with a note)")
            notes.append(f"{self.text_block}: no noisable token; certified on the image alone")
        content = input_hash(image, text)
        request_id = client_id if client_id is not None else content
        return Prepared(record, content, request_id, self.seed_of(record), notes)

    def seed_of(self, record: dict) -> int:
        """The noise seed of a prepared record (:func:`request_seed` under this service's
        key); no field of the request but its content takes part."""
        return request_seed(self._seed_key, self.config.seed, record)

    def _image(self, data: bytes) -> tuple[torch.Tensor, list[str]]:
        from PIL import Image

        from hybridcert.adapters.images import decode_image

        limits = self.settings.limits
        if not data:
            raise InputError(422, "image", "image is empty")
        if len(data) > limits.max_image_bytes:
            raise InputError(413, "image", f"image has {len(data):,} bytes, more than the "
                             f"{limits.max_image_bytes:,} allowed")
        if not (data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)):
            raise InputError(422, "image", "image must be a PNG or JPEG file")
        # The size is read from the file's own header first: Pillow refuses the largest
        # files (its decompression-bomb error) before it says their size.
        size = header_size(data)
        if size is None:
            try:
                with Image.open(io.BytesIO(data)) as header:
                    size = header.size
            except Image.DecompressionBombError:
                raise InputError(413, "image", f"image has more than the "
                                 f"{limits.max_image_pixels:,} pixels allowed") from None
            except Exception:
                raise InputError(422, "image", "image is not a PNG or JPEG Pillow can read") \
                    from None
        width, height = size
        if width * height > limits.max_image_pixels:
            raise InputError(413, "image", f"image has {width}x{height} pixels, more than the "
                             f"{limits.max_image_pixels:,} allowed")
        try:
            picture = decode_image(data, "image", limits.max_image_pixels)
            return self.processor.process(picture)
        except ImageError as err:
            raise InputError(422, "image", str(err)) from None
        except Exception as err:   # Pillow's own failures on hostile files
            raise InputError(422, "image", f"image cannot be decoded ({type(err).__name__})") \
                from None

    def submit(self, prepared: Prepared) -> Job:
        """Queue a decoded request (raises QueueFull or ShuttingDown)."""
        return self.driver.submit(prepared.record, prepared.seed, self.rules.new(),
                                  self.settings.timeout_s)

    def answer(self, prepared: Prepared, outcome: Outcome, started: float) -> dict:
        """The JSON answer of a finished request (and its audit row)."""
        rule = outcome.rule
        reading = self.rules.read(rule, prepared.record)
        targets = [dict(t, certified=c, **ending) for t, c, ending in
                   zip(self.rules.targets(), reading.certified, reading.endings, strict=True)]
        region = reading.region.rows()
        latency = time.perf_counter() - started
        answer = {
            "decision": reading.decision,
            "label": reading.label,
            "class_name": (self.class_names[reading.label]
                           if self.class_names and 0 <= reading.label < len(self.class_names)
                           else None),
            "certified": targets,
            "region": region,
            "p_lower": reading.p_lower,
            "p_upper": reading.p_upper,
            "status": reading.status,
            "decided_at": reading.decided_at,
            "queries": int(rule.queries),
            "drawn": int(outcome.drawn),
            "batches": int(outcome.batches),
            "latency_ms": round(latency * 1000, 3),
            "alpha": self.config.alpha,
            "rule": self.config.rule,
            "id": prepared.request_id,
            "input_hash": prepared.input_hash,
            "seed": prepared.seed,
            "notes": prepared.notes + reading.notes,
            "model": self.model_id,
            "config_hash": self.config_hash,
        }
        self.metrics.decisions.labels(reading.decision).inc()
        if reading.decision == ABSTAIN_WORD:
            self.metrics.abstentions.inc()
        self.metrics.queries.observe(int(rule.queries))
        self.metrics.latency.observe(latency)
        if self.audit is not None:
            self.audit.record(input_hash=prepared.input_hash, seed=prepared.seed,
                              decision=reading.decision, label=reading.label, targets=targets,
                              region=region, p_lower=reading.p_lower,
                              p_upper=reading.p_upper, queries=int(rule.queries),
                              alpha=self.config.alpha, model=self.model_id,
                              config_hash=self.config_hash)
        return answer

    def describe(self) -> dict:
        """What the page and clients need to know (no secrets)."""
        return {"model": self.model_id, "config_hash": self.config_hash,
                "alpha": self.config.alpha, "rule": self.config.rule,
                "targets": self.rules.targets(), "max_queries": self.config.n,
                "boundary": self.config.boundary, "price": self.config.price,
                "timeout_s": self.settings.timeout_s, "auth": self.auth_required,
                "image_size": list(self.processor.size) if self.processor.size else None,
                "image_space": self.processor.space,
                "limits": {"max_image_bytes": self.settings.limits.max_image_bytes,
                           "max_image_pixels": self.settings.limits.max_image_pixels,
                           "max_text_chars": self.settings.limits.max_text_chars},
                "blocks": self.plan.noise.describe()}


def _blocks(plan: Plan) -> tuple[str, str]:
    """(image block, text block) of the model: one of each."""
    noise, adapter = plan.noise, plan.adapter
    texts = list(adapter.text)
    images = list(adapter.images) or [b.name for b in noise.continuous]
    if len(texts) != 1 or len(images) != 1:
        raise ConfigError(f"the service takes one image block and one text block; the model "
                          f"has images {images} and text blocks {texts}")
    image, text = images[0], texts[0]
    noised = {b.name for b in noise.blocks if b.noise is not None}
    extra = sorted(noised - {image, text})
    if extra:
        raise ConfigError(f"the noise names block(s) {extra} that a request does not fill "
                          f"(it holds {image!r} and {text!r})")
    return image, text


def service_processor(plan: Plan, block: str) -> ImageProcessor:
    """The model's image processor, sized by ``image_size`` when the model states none (as
    ``certify`` does); a service needs a fixed size to bound what it draws."""
    try:
        processor = ImageProcessor.sized(plan.adapter.images.get(block),
                                         plan.config.image_size, block)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if processor.size is None:
        raise ConfigError("the model states no image size: give --image-size HxW (the "
                          "service draws noise for every pixel, so it needs a fixed size)")
    return processor


def _check_id(client_id, max_chars: int) -> None:
    """A client ``id`` is a label echoed in the answer: a non-empty string of at most
    ``max_chars`` characters, none of them a control character or a lone surrogate."""
    if not isinstance(client_id, str) or not client_id.strip():
        raise InputError(422, "id", f"id must be a non-empty string, got "
                         f"{_json_kind(client_id) if not isinstance(client_id, str) else 'blank'}")
    if len(client_id) > max_chars:
        raise InputError(413, "id", f"id has {len(client_id)} characters, more than the "
                         f"{max_chars} allowed")
    for position, char in enumerate(client_id):
        kind = unicodedata.category(char)
        if kind in ("Cs", "Cc"):
            what = "a lone surrogate" if kind == "Cs" else "a control character"
            raise InputError(422, "id", f"id holds {what} (U+{ord(char):04X}) at character "
                             f"{position}: send printable text")


def _json_kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
