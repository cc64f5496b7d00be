"""``hybridcert serve``: certified moderation over HTTP (needs ``pip install
'hybridcert[serve]'``).  Model and noise options are those of ``certify``; decisions are
sequential (``--mode decision``), so ``--n`` is the per-request query cap."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from hybridcert.cli.options import (
    AllowEmptyText,
    Alpha,
    AppendPlaceholder,
    AppendSlots,
    Blocks,
    Boundary,
    Checkpoint,
    ConfigFile,
    Device,
    FlaggedClass,
    ImageSize,
    KeepProb,
    MaxTokens,
    Model,
    ModelArgs,
    NoiseKind,
    NoTextNoise,
    NumClasses,
    Price,
    RuleKind,
    Sigma,
    Strict,
    SuffixLength,
    Threat,
    Threshold,
    parse_blocks,
    parse_model_args,
    parse_size,
    parse_targets,
)

Opt = typer.Option
#: An --allowed-host: a DNS name or IPv4 address, or an IPv6 address in brackets, with an
#: optional port.
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def serve(
    config: ConfigFile = None,
    demo: Annotated[bool, Opt("--demo", help="Serve the demo safety filter (trained under "
                              "artifacts/ first if absent).")] = False,
    checkpoint: Checkpoint = None,
    model: Model = None,
    model_arg: ModelArgs = None,
    num_classes: NumClasses = None,
    image_size: ImageSize = None,
    strict: Strict = None,
    sigma: Sigma = None,
    keep_prob: KeepProb = None,
    noise: NoiseKind = None,
    block: Blocks = None,
    threat: Threat = None,
    suffix_length: SuffixLength = None,
    append_slots: AppendSlots = None,
    append_placeholder: AppendPlaceholder = None,
    no_text_noise: NoTextNoise = None,
    allow_empty_text: AllowEmptyText = None,
    rule: RuleKind = None,
    threshold: Threshold = None,
    flagged_class: FlaggedClass = None,
    alpha: Alpha = None,
    n: Annotated[int | None, Opt("--n", help="Per-request query cap: most base-model "
                                 "evaluations one decision may spend.")] = None,
    seed: Annotated[int | None, Opt("--seed", help="Run seed, mixed into each request's "
                                    "noise seed; that seed is keyed by the server's secret "
                                    "(see --seed-key-file), so this alone predicts "
                                    "nothing.")] = None,
    max_tokens: MaxTokens = None,
    boundary: Boundary = None,
    price: Price = None,
    target: Annotated[list[str] | None, Opt("--target", help="Target region EPS,R or "
                                            "BLOCK=SIZE,... (repeatable; default 0,0: the "
                                            "input itself).")] = None,
    host: Annotated[str, Opt("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, Opt("--port")] = 8000,
    allowed_host: Annotated[list[str] | None, Opt("--allowed-host", help="A Host name to "
                                                  "answer besides the bind address, "
                                                  "localhost, 127.0.0.1 and [::1] "
                                                  "(repeatable; '*': any host).")] = None,
    allowed_origin: Annotated[list[str] | None, Opt("--allowed-origin", help="An origin "
                                                    "(scheme://host[:port]) whose pages may "
                                                    "POST besides the service's own "
                                                    "(repeatable).")] = None,
    api_key_file: Annotated[Path | None, Opt("--api-key-file", help="File of API keys, one "
                                             "per line: requests then need 'Authorization: "
                                             "Bearer <key>'.")] = None,
    timeout: Annotated[float, Opt("--timeout", help="Seconds one request may take (then "
                                  "504 and its sampling stops).")] = 10.0,
    header_timeout: Annotated[float, Opt("--header-timeout", help="Seconds a client has to "
                                         "send a request's headers (then the connection is "
                                         "closed).")] = 10.0,
    body_timeout: Annotated[float, Opt("--body-timeout", help="Seconds a client has to send "
                                       "a request's body after its headers (then 408 and the "
                                       "connection is closed).")] = 30.0,
    seed_key_file: Annotated[Path | None, Opt("--seed-key-file", help="File holding the "
                                              "secret (at least 32 characters) that keys each "
                                              "request's noise seed, so decisions are the same "
                                              "across restarts; default: a fresh random key "
                                              "per start.")] = None,
    batch_size: Annotated[int, Opt("--batch-size", help="Most noisy copies per forward pass, "
                                   "shared by concurrent requests.")] = 256,
    max_pending: Annotated[int, Opt("--max-pending", help="Most requests queued or running "
                                    "(more get 503).")] = 128,
    speculation: Annotated[float | None, Opt("--speculation", help="Spare batch rows go to "
                                             "running requests, up to this multiple of their "
                                             "draws so far (fewer passes at low load; same "
                                             "decisions). Default 0 on CPU, 1 on GPU.")]
    = None,
    group_rows: Annotated[int | None, Opt("--group-rows", help="Run each forward batch in "
                                          "slices of one text length, each of at least this "
                                          "many rows (0: whole batches; same decisions). "
                                          "Default 32 on CPU, 0 on GPU.")] = None,
    max_image_bytes: Annotated[int, Opt("--max-image-bytes")] = 8 * 1024 * 1024,
    max_image_pixels: Annotated[int, Opt("--max-image-pixels")] = 16_000_000,
    max_text_chars: Annotated[int, Opt("--max-text-chars")] = 4096,
    audit_log: Annotated[Path | None, Opt("--audit-log", help="SQLite file: one row per "
                                          "decision (input hash, decision, region, alpha, "
                                          "model and config hash). Off by default.")] = None,
    device: Device = "cpu",
    log_level: Annotated[str, Opt("--log-level")] = "info",
) -> None:
    """Serve certified moderation over HTTP: POST /v1/moderate, GET /healthz, /metrics, /.

    --model and --config name code that runs in this process: a config is code.
    """
    from hybridcert.runs.config import ConfigError, RunConfig
    from hybridcert.runs.runner import plan

    try:
        from hybridcert.serve.app import origin_of, run_server
        from hybridcert.serve.service import (
            Limits,
            ModerationService,
            ServeSettings,
            read_api_keys,
            read_seed_key,
        )
    except ImportError as err:
        raise ConfigError(f"hybridcert serve needs the serve extra: pip install "
                          f"'hybridcert[serve]' ({err})") from None
    for name, value in (("--batch-size", batch_size), ("--max-pending", max_pending),
                        ("--max-image-bytes", max_image_bytes),
                        ("--max-image-pixels", max_image_pixels),
                        ("--max-text-chars", max_text_chars)):
        if value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value}")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must lie in 1..65535, got {port}")
    for name, value in (("--timeout", timeout), ("--header-timeout", header_timeout),
                        ("--body-timeout", body_timeout)):
        if not 0 < value < float("inf"):
            raise ConfigError(f"{name} must be a number of seconds > 0, got {value}")
    hosts = tuple(allowed_host or ())
    for name in hosts:
        if name != "*" and not _HOST_NAME.fullmatch(name):
            raise ConfigError(f"--allowed-host must be a host name or address, optionally "
                              f"with :PORT (IPv6 in brackets), or '*'; got {name!r}")
    origins = tuple(allowed_origin or ())
    for url in origins:
        if origin_of(url) is None:
            raise ConfigError(f"--allowed-origin must be an origin http(s)://host[:port] "
                              f"(no path), got {url!r}")
    keys = read_api_keys(api_key_file) if api_key_file is not None else ()
    seed_key = read_seed_key(seed_key_file) if seed_key_file is not None else None
    targets = parse_targets(target)
    adapter = None
    if demo:
        from hybridcert.serve.demo import DEMO_TARGETS, demo_adapter, demo_checkpoint, demo_config

        if checkpoint or model:
            raise ConfigError("--demo serves the demo model: give no --checkpoint or --model")
        directory = demo_checkpoint(log=lambda m: typer.echo(m, err=True))
        checkpoint = str(directory)
        adapter = demo_adapter(directory)
        trained = demo_config()           # served under the noise it was trained with
        sigma = trained.sigma if sigma is None and not block else sigma
        keep_prob = trained.keep_prob if keep_prob is None and not block else keep_prob
        targets = targets or [list(t) for t in DEMO_TARGETS]
    run_config = RunConfig.from_sources(
        config, checkpoint=checkpoint, model=model, model_args=parse_model_args(model_arg),
        num_classes=num_classes,
        image_size=parse_size(image_size), strict=strict,
        sigma=sigma, keep_prob=keep_prob, noise=noise,
        blocks=parse_blocks(block), threat=threat,
        suffix_length=suffix_length, append_slots=append_slots,
        append_placeholder=append_placeholder, no_text_noise=no_text_noise,
        allow_empty_text=allow_empty_text, rule=rule,
        threshold=threshold,
        flagged_class=flagged_class, mode="decision", alpha=alpha, n=n, seed=seed,
        max_tokens=max_tokens, targets=targets or _config_targets(config) or [[0.0, 0]],
        boundary=boundary, price=price)
    if speculation is not None and not 0 <= speculation < float("inf"):
        raise ConfigError(f"--speculation must be a finite number >= 0, got {speculation}")
    if group_rows is not None and group_rows < 0:
        raise ConfigError(f"--group-rows must be an integer >= 0, got {group_rows}")
    settings = ServeSettings(batch_size=batch_size, max_pending=max_pending, timeout_s=timeout,
                             speculation=speculation, group_rows=group_rows,
                             limits=Limits(max_image_bytes, max_image_pixels, max_text_chars),
                             api_keys=keys, audit_path=audit_log, seed_key=seed_key,
                             header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                             allowed_hosts=hosts, allowed_origins=origins)
    service = ModerationService(plan(run_config, device, batch_size, adapter=adapter),
                                settings)
    typer.echo(f"serving {service.model_id} on http://{host}:{port} (alpha "
               f"{run_config.alpha:g}, {len(service.rules.budgets)} target(s), query cap "
               f"{run_config.n:,}, boundary {run_config.boundary}"
               f"{f', price {run_config.price:g}' if run_config.price else ''}"
               f"{', API keys required' if keys else ''}"
               f", noise seeds keyed by {'--seed-key-file' if seed_key else 'a fresh secret'}"
               f"{', audit log ' + str(audit_log) if audit_log else ''})", err=True)
    run_server(service, host, port, log_level)


def _config_targets(config: Path | None):
    """The TOML file's targets (flags win; the service's default applies only without
    either)."""
    if config is None:
        return None
    from hybridcert.runs.config import read_toml

    return read_toml(config).get("targets")
