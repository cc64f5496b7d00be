"""The one source of truth for a run's options: a validated configuration that the TOML file,
the command-line flags and the library share.

Everything that determines a run's results is here and stored beside them; how the run is
executed (device, batch size, backend, workers) is not.  Validation happens in full when the
configuration is built, before any data is read or any store is touched.

A configuration names a model entry point (``module:factory``) or a checkpoint: **loading
it runs that code** — a configuration file is code, to be trusted like a Python script.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hybridcert._validation import check_count, check_level, check_nonnegative, check_positive

MODES = ("fixed", "decision", "radius")
RULES = ("majority", "flag", "benign", "detector")
THREATS = ("substitute", "suffix", "append")
#: Largest token budget a run may ask about (per token block).
MAX_TOKEN_BUDGET = 1000
#: Keys a TOML file may hold that say how a command runs, not what it certifies: they are not
#: part of the configuration (nor of its digest).
EXECUTION_KEYS = ("store",)


class ConfigError(ValueError):
    """An option outside what is allowed; the message names it."""


@dataclass(frozen=True)
class BlockNoise:
    """The noise of one block: ``gaussian`` (sigma), ``substitution`` or ``mask`` (keep
    probability), or ``none`` (the block is passed unchanged and never attacked)."""

    kind: str
    level: float | None = None

    @classmethod
    def parse(cls, name: str, value: Any) -> BlockNoise:
        """From ``"gaussian:0.25"``, ``"substitution:0.1"``, ``"mask:0.3"``, ``"none"`` or a
        TOML table ``{gaussian = 0.25}``."""
        if isinstance(value, BlockNoise):
            return value
        if isinstance(value, dict):
            if len(value) != 1:
                raise ConfigError(f"block {name!r}: give one noise, e.g. {{gaussian = 0.25}}, "
                                  f"got {value!r}")
            kind, level = next(iter(value.items()))
        elif isinstance(value, str):
            kind, _, level = value.partition(":")
            level = level or None
        else:
            raise ConfigError(f"block {name!r}: noise must look like gaussian:0.25, "
                              f"substitution:0.1, mask:0.3 or none, got {value!r}")
        from hybridcert.noise import NOISES  # the noise registry names the kinds

        kind = str(kind).strip().lower()
        if kind not in (*NOISES, "none"):
            names = sorted(NOISES, key=lambda n: NOISES[n].kind != "continuous")
            raise ConfigError(f"block {name!r}: noise must be {', '.join(names)} or none, got "
                              f"{kind!r}")
        if kind == "none":
            if level is not None:
                raise ConfigError(f"block {name!r}: noise 'none' takes no level")
            return cls("none")
        try:
            number = float(level)
        except (TypeError, ValueError):
            raise ConfigError(f"block {name!r}: {kind} needs a number, e.g. {kind}:0.25, got "
                              f"{level!r}") from None
        noise = NOISES[kind]
        try:
            noise.check_level(number)
        except ValueError as err:
            raise ConfigError(f"block {name!r}: {kind} {err}") from None
        return cls(kind, number)

    def build(self, vocab_size: int | None = None):
        """The noise itself (None for ``none``), for a block of ``vocab_size`` values."""
        from hybridcert.noise import NOISES

        return None if self.kind == "none" else NOISES[self.kind].build(self.level, vocab_size)

    @property
    def continuous(self) -> bool:
        """Noise on a continuous block (Gaussian)."""
        from hybridcert.noise import NOISES

        return self.kind in NOISES and NOISES[self.kind].kind == "continuous"

    @property
    def tokens(self) -> bool:
        """Noise on a token block (substitution, mask)."""
        from hybridcert.noise import NOISES

        return self.kind in NOISES and NOISES[self.kind].kind == "discrete"

    def spec(self) -> str:
        return self.kind if self.level is None else f"{self.kind}:{self.level:g}"


@dataclass
class RunConfig:
    """Everything that determines a run's results (stored beside them).

    Data: ``dataset`` (``safety:test[:N]``, a .jsonl file or folder, .parquet,
    ``hateful_memes:PATH``, ``mm_safetybench:PATH``), ``columns`` (block -> column; default:
    the model's blocks read from columns of the same name), ``limit`` (first rows only),
    ``label_column``, ``id_column``, ``label_map`` (string label -> class), ``image_size``,
    ``allow_outside_paths``, ``strict`` (refuse any silent transformation).

    Model: ``model`` (entry point ``module:factory``) or ``checkpoint`` (a folder from
    ``hybridcert train``); ``model_args`` (keyword arguments of the factory, checked against
    its signature when the model is loaded; in TOML ``[model]`` with ``entry`` and
    ``[model.args]``); ``num_classes``.

    Noise: ``blocks`` (block -> noise spec, e.g. ``{"image": "gaussian:0.25", "text":
    "substitution:0.2"}``); the short form ``sigma`` / ``keep_prob`` / ``noise`` fills the
    blocks ``image`` and ``text``.  Text threat: ``threat`` (substitute, suffix, append),
    ``suffix_length``, ``append_slots``, ``append_placeholder``.  ``no_text_noise``: the
    model reads text but no token block is noised, on purpose (required then; the report says
    that no token change is certified).  ``allow_empty_text``: certify a row whose noised text
    has no noisable token (empty, or only unknown words) on its other blocks alone, with a
    note (refused otherwise).

    Certificate: ``rule`` (majority vote; ``flag`` / ``benign`` / ``detector`` for a detector
    thresholded at ``threshold`` on ``flagged_class``), ``mode`` (fixed n, sequential
    ``decision`` at ``targets``, sequential ``radius``), ``n0`` (fixed n's selection draws;
    sequential modes need none), ``n`` (the cap in sequential modes), ``alpha``, ``p_upper``,
    ``max_tokens``, ``seed``, ``tolerance``, ``max_radius``, ``boundary`` (mixture, looks or
    spending)
    and ``price`` (sequential tables: give up targets that would cost more draws).
    """

    dataset: str = "safety:test"
    columns: dict | None = None
    limit: int | None = None
    label_column: str = "label"
    id_column: str = "id"
    label_map: dict | None = None
    image_size: list | None = None
    allow_outside_paths: bool = False
    strict: bool = False
    checkpoint: str | None = None
    model: str | None = None
    model_args: dict = field(default_factory=dict)
    num_classes: int = 2
    blocks: dict = field(default_factory=dict)
    sigma: float | None = None
    keep_prob: float | None = None
    noise: str = "substitution"
    threat: str = "substitute"
    suffix_length: int | None = None
    append_slots: int | None = None
    append_placeholder: str | None = None
    no_text_noise: bool = False
    allow_empty_text: bool = False
    rule: str = "majority"
    threshold: float | None = None
    flagged_class: int = 1
    mode: str = "fixed"
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    p_upper: str = "complement"
    max_tokens: int = 16
    seed: int = 0
    targets: list | None = None
    tolerance: float = 0.01
    max_radius: float | None = None
    boundary: str = "mixture"
    price: float | None = None

    def __post_init__(self) -> None:
        self._validate()

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_sources(cls, toml_path: Path | None = None, **flags) -> RunConfig:
        """Defaults, then the TOML file, then the flags that are not None (``--model-arg``
        flags override the file's factory arguments key by key; a ``--model`` flag replaces
        the file's factory and its arguments).  The file's execution keys
        (:data:`EXECUTION_KEYS`, e.g. ``store``) are the command's, not the configuration's
        (see :func:`execution_settings`)."""
        settings: dict[str, Any] = {}
        if toml_path is not None:
            settings.update({k: v for k, v in _flatten_model(read_toml(Path(toml_path))).items()
                             if k not in EXECUTION_KEYS})
        flags = {k: v for k, v in flags.items() if v is not None}
        if "model" in flags:                   # another factory: the file's arguments go
            settings.pop("model_args", None)
        elif "model_args" in flags:            # the file's factory: its arguments, per key
            flags["model_args"] = {**(settings.get("model_args") or {}), **flags["model_args"]}
        settings.update(flags)
        return cls.from_dict(settings)

    @classmethod
    def from_dict(cls, settings: dict) -> RunConfig:
        """From a TOML table or keyword options.  Keys may be written as on the command line
        (``keep-prob``); ``label_map``, ``columns`` and ``blocks`` may be tables or the flags'
        strings (``"safe=0,unsafe=1"``), ``image_size`` ``"48x48"``, targets ``"0.25,1"``."""
        settings = _flatten_model(settings)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        if isinstance(settings.get("label_map"), str):
            settings["label_map"] = parse_mapping("label_map", settings["label_map"], int)
        for key in ("columns", "blocks"):
            if isinstance(settings.get(key), str):
                settings[key] = parse_mapping(key, settings[key])
        if isinstance(settings.get("image_size"), str):
            settings["image_size"] = parse_image_size(settings["image_size"])
        if isinstance(settings.get("targets"), list):
            settings["targets"] = [parse_target(t) if isinstance(t, str) else t
                                   for t in settings["targets"]]
        return cls(**settings)

    def to_dict(self) -> dict:
        out = asdict(self)
        if not out["model_args"]:      # runs stored before model_args existed still resume
            del out["model_args"]
        return out

    def digest(self) -> str:
        """Hash of the configuration (the service and the audit log quote it)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # -- derived views -------------------------------------------------------------------
    def block_noises(self) -> dict[str, BlockNoise]:
        """Block -> noise, short form and ``blocks`` merged (``blocks`` wins)."""
        out: dict[str, BlockNoise] = {}
        if self.sigma is not None:
            out["image"] = BlockNoise("gaussian", float(self.sigma))
        if self.keep_prob is not None:
            out["text"] = BlockNoise(self.noise, float(self.keep_prob))
        for name, value in self.blocks.items():
            out[name] = BlockNoise.parse(name, value)
        return out

    def target_budgets(self) -> list[dict[str, float]]:
        """Decision targets as per-block budgets (``[eps, r]`` pairs apply to the one
        Gaussian-noised block and the one noised token block)."""
        from hybridcert.blocks.hybrid import pair_budget

        noises = self.block_noises()
        continuous = [n for n, b in noises.items() if b.continuous]
        tokens = [n for n, b in noises.items() if b.tokens]
        out = []
        for target in self.targets or []:
            if isinstance(target, dict):
                out.append(dict(target))
                continue
            try:
                out.append(pair_budget(*target, continuous, tokens))
            except ValueError as err:
                raise ConfigError(f"target {target!r}: {err}") from None
        return out

    # -- validation ----------------------------------------------------------------------
    def _validate(self) -> None:
        _check_str("dataset", self.dataset)
        if self.columns is not None and (not isinstance(self.columns, dict) or not self.columns
                                         or not all(isinstance(k, str) and isinstance(v, str)
                                                    and k and v
                                                    for k, v in self.columns.items())):
            raise ConfigError(f"columns must map block names to column names, e.g. "
                              f"image=img,text=caption, got {self.columns!r}")
        if self.limit is not None:
            _guard(check_count, "limit", self.limit, minimum=1)
        _check_str("label_column", self.label_column)
        _check_str("id_column", self.id_column)
        if self.label_map is not None:
            if not isinstance(self.label_map, dict) or not self.label_map:
                raise ConfigError(f"label_map must map label names to classes, e.g. "
                                  f"safe=0,unsafe=1, got {self.label_map!r}")
            for key, value in self.label_map.items():
                if isinstance(value, bool) or not isinstance(value, int) or \
                        not 0 <= value < self.num_classes:
                    raise ConfigError(f"label_map[{key!r}] must be a class in "
                                      f"[0, {self.num_classes - 1}], got {value!r}")
        if self.image_size is not None:
            size = self.image_size
            if isinstance(size, int):
                size = [size, size]
            if not isinstance(size, (list, tuple)) or len(size) != 2 or any(
                    isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
                raise ConfigError(f"image_size must be HEIGHTxWIDTH positive integers (or one "
                                  f"integer), got {self.image_size!r}")
            self.image_size = [int(size[0]), int(size[1])]
        for name in ("allow_outside_paths", "strict", "no_text_noise", "allow_empty_text"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if (self.checkpoint is None) == (self.model is None):
            raise ConfigError("give exactly one of --checkpoint or --model")
        if self.model is not None:
            module, _, attr = str(self.model).partition(":")
            if not module or not attr:
                raise ConfigError(f"--model must look like 'module:factory', got "
                                  f"{self.model!r}")
        self._validate_model_args()
        _guard(check_count, "num_classes", self.num_classes, minimum=2)
        if self.noise not in ("substitution", "mask"):
            raise ConfigError(f"noise must be substitution or mask, got {self.noise!r}")
        if not isinstance(self.blocks, dict):
            raise ConfigError(f"blocks must map block names to noises, got {self.blocks!r}")
        if self.sigma is not None:
            BlockNoise.parse("image", f"gaussian:{_number('sigma', self.sigma)}")
        if self.keep_prob is not None:
            BlockNoise.parse("text", f"{self.noise}:{_number('keep_prob', self.keep_prob)}")
        noises = self.block_noises()
        if not any(b.kind != "none" for b in noises.values()):
            raise ConfigError("no block is noised: give --sigma and/or --keep-prob, or "
                              "--block NAME=gaussian:S|substitution:A|mask:A")
        if self.no_text_noise:
            noised_text = sorted(n for n, b in noises.items() if b.kind in ("substitution",
                                                                             "mask"))
            if noised_text:
                raise ConfigError(f"no_text_noise contradicts the text noise of {noised_text} "
                                  f"(--keep-prob or --block): give one or the other")
        self._validate_threat(noises)
        if self.rule not in RULES:
            raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.rule == "majority":
            if self.threshold is not None:
                raise ConfigError("threshold is for the detector rules (flag, benign, "
                                  "detector); the majority rule takes none")
        else:
            if self.threshold is None:
                raise ConfigError(f"rule {self.rule!r} needs a threshold tau in (0, 1)")
            tau = _number("threshold", self.threshold)
            if not 0 < tau < 1:
                raise ConfigError(f"threshold must lie in (0, 1), got {tau!r}")
            _guard(check_count, "flagged_class", self.flagged_class)
            if self.flagged_class >= self.num_classes:
                raise ConfigError(f"flagged_class must lie in [0, {self.num_classes - 1}], got "
                                  f"{self.flagged_class}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be fixed, decision or radius, got {self.mode!r}")
        _guard(check_count, "n0", self.n0, minimum=1)
        _guard(check_count, "n", self.n, minimum=1)
        _guard(check_level, "alpha", _number("alpha", self.alpha))
        if self.p_upper not in ("complement", "bonferroni"):
            raise ConfigError(f"p_upper must be complement or bonferroni, got {self.p_upper!r}")
        if self.p_upper == "bonferroni" and self.mode != "fixed":
            raise ConfigError("p_upper = bonferroni (more than two classes) is available in "
                              "mode fixed only")
        _guard(check_count, "max_tokens", self.max_tokens)
        if self.max_tokens > MAX_TOKEN_BUDGET:
            raise ConfigError(f"max_tokens must be at most {MAX_TOKEN_BUDGET}, got "
                              f"{self.max_tokens}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        _guard(check_positive, "tolerance", self.tolerance)
        if self.max_radius is not None:
            _guard(check_positive, "max_radius", self.max_radius)
        from hybridcert.sequential import check_question, get_boundary

        try:
            get_boundary(self.boundary)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.boundary != "mixture" and self.mode == "fixed":
            raise ConfigError(f"boundary {self.boundary} is for the sequential modes (decision, "
                              f"radius); mode fixed draws n copies")
        if self.mode != "fixed":          # the one check of a sequential question
            try:
                check_question(self.alpha, self.mode, self.boundary, self.rule,
                               has_targets=bool(self.targets))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        if self.price is not None:
            _guard(check_positive, "price", self.price)
            if self.mode != "decision":
                raise ConfigError("price is for the sequential decision mode (many targets)")
        if self.targets is not None:
            self._validate_targets(noises)

    def _validate_model_args(self) -> None:
        if self.model_args is None:
            self.model_args = {}
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"model_args must map argument names to values, e.g. "
                              f"--model-arg sigma=0.5, got {self.model_args!r}")
        if self.model_args and self.model is None:
            raise ConfigError("model_args (--model-arg) are arguments of a --model factory; "
                              "a --checkpoint takes none")
        for key, value in self.model_args.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ConfigError(f"model argument name {key!r} is not a Python identifier")
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ConfigError(f"model argument {key!r} must be a JSON value (string, "
                                  f"number, true/false, list or table), got {value!r}") from None

    def _validate_threat(self, noises: dict[str, BlockNoise]) -> None:
        if self.threat not in THREATS:
            raise ConfigError(f"threat must be one of {', '.join(THREATS)}, got {self.threat!r}")
        token_blocks = [n for n, b in noises.items() if b.kind in ("substitution", "mask")]
        if self.threat != "substitute" and not token_blocks:
            raise ConfigError(f"threat {self.threat!r} needs a noised token block")
        if self.threat == "suffix":
            if self.suffix_length is None:
                raise ConfigError("threat suffix needs --suffix-length D (the widest suffix)")
            _guard(check_count, "suffix_length", self.suffix_length, minimum=1)
        elif self.suffix_length is not None:
            raise ConfigError("suffix_length is for threat suffix")
        if self.threat == "append":
            if self.append_slots is None:
                raise ConfigError("threat append needs --append-slots M")
            _guard(check_count, "append_slots", self.append_slots, minimum=1)
            if self.append_slots > MAX_TOKEN_BUDGET:
                raise ConfigError(f"append_slots must be at most {MAX_TOKEN_BUDGET}")
            if self.append_placeholder is not None:
                _check_str("append_placeholder", self.append_placeholder)
        elif self.append_slots is not None or self.append_placeholder is not None:
            raise ConfigError("append_slots and append_placeholder are for threat append")

    def _validate_targets(self, noises: dict[str, BlockNoise]) -> None:
        if not isinstance(self.targets, list) or not self.targets:
            raise ConfigError(f"targets must be a list of [eps, r] pairs or per-block tables, "
                              f"got {self.targets!r}")
        normalised = []
        for target in self.targets:
            if isinstance(target, dict):
                budget = {}
                for name, size in target.items():
                    if name not in noises or noises[name].kind == "none":
                        raise ConfigError(f"target {target!r} names {name!r}, which is not a "
                                          f"noised block ({sorted(noises)})")
                    if noises[name].continuous:
                        budget[name] = _guard(check_nonnegative, f"target L2 of {name!r}", size)
                    else:
                        budget[name] = _target_tokens(name, size)
                normalised.append(budget)
                continue
            if not isinstance(target, (list, tuple)) or len(target) != 2:
                raise ConfigError(f"a target must be [eps, r] or a per-block table, got "
                                  f"{target!r}")
            eps = _guard(check_nonnegative, "target eps", target[0])
            normalised.append([eps, _target_tokens("target", target[1])])
        self.targets = normalised
        first: dict[tuple, int] = {}
        for k, budget in enumerate(self.target_budgets()):  # raises on an ambiguous [eps, r]
            key = tuple(sorted(budget.items()))
            if key in first:
                raise ConfigError(f"target {k + 1} ({_shown(self.targets[k])}) repeats target "
                                  f"{first[key] + 1} ({_shown(self.targets[first[key]])}); "
                                  f"give each target once")
            first[key] = k


def _shown(target) -> str:
    """A target as ``--target`` spells it."""
    if isinstance(target, dict):
        return ",".join(f"{name}={size:g}" for name, size in target.items())
    return f"{target[0]:g},{target[1]:g}"


def _flatten_model(settings: dict) -> dict:
    """Keys as on the command line accepted (``keep-prob``), and a TOML ``[model]`` table
    (``entry`` and ``[model.args]``) read as ``model`` and ``model_args``."""
    settings = {str(k).replace("-", "_"): v for k, v in settings.items()}
    if isinstance(settings.get("model"), dict):
        table = dict(settings["model"])
        if set(table) - {"entry", "args"} or "entry" not in table:
            raise ConfigError(f"a [model] table takes entry = 'module:factory' and an "
                              f"optional [model.args] table, got keys {sorted(table)}")
        if "args" in table and "model_args" in settings:
            raise ConfigError("give the factory's arguments once: [model.args] or "
                              "model_args, not both")
        settings["model"] = table["entry"]
        if "args" in table:
            settings["model_args"] = table["args"]
    return settings


def read_toml(path: Path) -> dict:
    """A TOML configuration as a dict (one-line errors)."""
    if not path.exists():
        raise ConfigError(f"config file {path} not found")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path}: {err}") from None


def execution_settings(toml_path: Path | None) -> dict:
    """The TOML file's execution keys (:data:`EXECUTION_KEYS`), checked: ``store`` a
    non-empty string (a path, relative to the current directory like the dataset's)."""
    if toml_path is None:
        return {}
    settings = {str(k).replace("-", "_"): v for k, v in read_toml(Path(toml_path)).items()}
    out = {k: settings[k] for k in EXECUTION_KEYS if k in settings}
    if "store" in out:
        _check_str("store", out["store"])
    return out


def parse_target(value: str) -> list | dict:
    """``"0.25,1"`` -> [0.25, 1]; ``"image=0.25,caption=1"`` -> {"image": 0.25, "caption": 1}."""
    parts = [p.strip() for p in value.split(",")]
    try:
        if all("=" in p for p in parts):
            out = {}
            for part in parts:
                name, _, size = part.partition("=")
                out[name.strip()] = float(size) if "." in size or "e" in size.lower() \
                    else int(size)
            return out
        eps, r = parts
        return [float(eps), int(r)]
    except ValueError:
        raise ConfigError(f"--target must look like EPS,R (e.g. 0.25,1) or BLOCK=SIZE,... "
                          f"(e.g. image=0.25,caption=1), got {value!r}") from None


def parse_model_args(values: list[str] | None) -> dict | None:
    """``--model-arg KEY=VALUE`` (repeatable) -> {key: value}: the value parsed as JSON where
    it parses (``0.5``, ``true``, ``[1, 2]``, ``"x"``), else kept as the string."""
    if not values:
        return None
    out: dict[str, Any] = {}
    for value in values:
        name, sep, text = value.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--model-arg must look like KEY=VALUE (e.g. sigma=0.5), got "
                              f"{value!r}")
        if name in out:
            raise ConfigError(f"--model-arg {name!r} is given twice")
        try:
            out[name] = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            out[name] = text
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")      # NaN, Infinity: kept as strings


def parse_mapping(option: str, value: str, convert=str) -> dict:
    """``"a=1,b=2"`` -> {"a": convert("1"), ...} (for --columns, --label-map, --block)."""
    out = {}
    for part in value.split(","):
        name, sep, item = part.partition("=")
        if not sep or not name.strip() or not item.strip():
            raise ConfigError(f"{option} must look like NAME=VALUE[,NAME=VALUE...], got "
                              f"{value!r}")
        try:
            out[name.strip()] = convert(item.strip())
        except ValueError:
            raise ConfigError(f"{option}: {item.strip()!r} is not allowed for "
                              f"{name.strip()!r}") from None
    return out


def parse_image_size(value: str) -> list[int]:
    parts = value.lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"image_size must look like 224 or 224x224, got {value!r}") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2:
        raise ConfigError(f"image_size must look like 224 or 224x224, got {value!r}")
    return numbers


def _target_tokens(name: str, size) -> int:
    value = _guard(check_count, f"token budget of {name!r}", size)
    if value > MAX_TOKEN_BUDGET:
        raise ConfigError(f"token budget of {name!r} must be at most {MAX_TOKEN_BUDGET}, got "
                          f"{value}")
    return value


def _check_str(name: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return value


def _guard(check, name, value, **kwargs):
    try:
        return check(name, value, **kwargs)
    except ValueError as err:
        raise ConfigError(str(err)) from None
