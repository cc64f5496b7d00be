"""A generative vision-language guard (LLaVA-Guard style) as a classifier, in one forward pass.

The guard reads a chat prompt — a policy, then the user's content — and would answer "Safe" or
"Unsafe".  Instead of generating, the classifier reads the next-token distribution after the
prompt and returns, per class, the log of the probability mass of that class's label tokens
(every single-token variant of the label: "Safe", "safe", " SAFE", ...): logits ``(B, C)``.

Only the user's text is a token block: the record holds the user's ids alone (so noise and
threats — substitution anywhere, a suffix, appended placeholder slots — act on it and nothing
else), and :class:`GuardClassifier` builds ``prompt prefix + user ids + prompt suffix`` for
each row of a batch, whatever the padding of the user block (its attention mask says which
positions hold text).  Rows are right-padded and the decision is read at each row's last real
position, so positions match an unpadded forward pass exactly.

The prompt's pieces are tokenized separately (prefix, user text, suffix, each without special
tokens; the chat template supplies them): the ids at the two seams may differ from tokenizing
the whole prompt as one string.  The smoothed classifier is defined on these ids, which is
what the certificate covers.

Images, two ways:

* single-crop processors (LLaVA-1.5 style): the processor's resize/crop/rescale runs before
  the noise (in [0, 1] pixel space) and its normalization after it, inside
  :class:`GuardClassifier`; the certified L2 ball is in the pixels the model sees.
* tiled processors (LLaVA-NeXT / OneVision "anyres", ``raw_size=(H, W)``): the noise is added
  to the raw image at that size and the model's whole image processor runs on each noisy copy
  inside :class:`GuardClassifier` (:mod:`hybridcert.adapters.tiled`); the certified L2 ball
  is in raw pixel space at ``raw_size``.  Without ``raw_size`` such processors are refused:
  the same pixel appears in several crops at different scales, so noise on the crops is not
  noise on the image.

Per-copy decision: by default the class with the larger label mass (argmax).  With
``copy_threshold=t`` a copy is the second class (Unsafe) iff its unsafe score reaches ``t``:
``score="mass"`` reads P(Unsafe label tokens), ``score="margin"`` reads
log P(Unsafe) - log P(Safe).  A smoothed detector's threshold ``tau`` (``--rule flag
--threshold``) is separate: it thresholds the share of noisy copies decided Unsafe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hybridcert.adapters.base import ModelAdapter
from hybridcert.adapters.hf import HFImageProcessor, Normalize, special_ids
from hybridcert.adapters.tiled import (
    RawImageProcessor,
    forward_arguments,
    image_token_count,
)
from hybridcert.blocks import TextEncoder, Vocabulary
from hybridcert.blocks.text import check_user_ids, hf_id_to_token, hf_special_tokens

DEFAULT_POLICY = (
    "You are a content safety classifier. Judge the user's content below, the image and the "
    "text together. Answer Unsafe if it asks for, encourages or helps violence, self-harm, "
    "weapons, crime, illegal drugs, sexual exploitation, hate or harassment, or cruelty to "
    "animals; otherwise answer Safe. Answer with one word: Safe or Unsafe.")
#: How the policy and the user's text form the user turn; ``{policy}`` and ``{text}`` are
#: replaced literally (braces elsewhere are kept).
USER_TEMPLATE = "{policy}\n\nUser content:\n{text}\n"
_SENTINEL = "\u2063hybridcert-user-text\u2063"
SCORES = ("mass", "margin")


class GuardClassifier(nn.Module):
    """``batch -> (B, C)`` log label-token masses of a generative guard.

    Parameters
    ----------
    model : transformers causal / vision-language model
        Called as ``model(input_ids=, attention_mask=, pixel_values=, logits_to_keep=)``.
    prefix_ids, suffix_ids : sequence of int
        The prompt around the user's text (the prefix holds the expanded image tokens).
    class_token_ids : sequence of sequence of int
        Per class, the label-token ids whose probability mass is that class's score.
    pad_id : int
        Id used to pad rows (never attended).
    normalize : Normalize, optional
        The image processor's normalization (None for a text-only guard).
    image_inputs : nn.Module, optional
        Noisy image -> the model's image arguments (a tiled processor,
        :class:`~hybridcert.adapters.tiled.ProcessorInputs`); replaces ``normalize``.
    score : {"mass", "margin"}
        The unsafe score thresholded by ``copy_threshold``: P(class 1 label tokens), or
        log P(class 1) - log P(class 0).
    copy_threshold : float, optional
        None: return the ``(B, C)`` log masses (the smoothing takes their argmax).  Otherwise
        return labels ``(B,)``: 1 iff the copy's score is at least ``copy_threshold``, else 0
        (two classes only).
    """

    def __init__(self, model: nn.Module, prefix_ids: Sequence[int], suffix_ids: Sequence[int],
                 class_token_ids: Sequence[Sequence[int]], pad_id: int,
                 normalize: Normalize | None = None, *, image_block: str | None = "image",
                 text_block: str = "text", image_inputs: nn.Module | None = None,
                 score: str = "mass", copy_threshold: float | None = None):
        super().__init__()
        score, copy_threshold = check_operating_point(score, copy_threshold,
                                                      len(class_token_ids))
        self.score, self.copy_threshold = score, copy_threshold
        self.image_inputs = image_inputs
        self.model = model
        self.register_buffer("prefix", torch.tensor(list(prefix_ids), dtype=torch.long))
        self.register_buffer("suffix", torch.tensor(list(suffix_ids), dtype=torch.long))
        self.class_token_ids = [list(map(int, ids)) for ids in class_token_ids]
        for c, ids in enumerate(self.class_token_ids):
            self.register_buffer(f"class_ids_{c}", torch.tensor(ids, dtype=torch.long))
        self.pad_id = int(pad_id)
        self.normalize = normalize
        self.image_block, self.text_block = image_block, text_block

    def sequences(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, last)``: per row ``prefix + user ids + suffix``,
        right-padded; ``last`` is each row's last real position."""
        ids = batch[self.text_block]
        attention = batch.get(self.text_block + "_attention")
        attention = torch.ones_like(ids, dtype=torch.bool) if attention is None \
            else attention.bool()
        rows, width = ids.shape
        count = attention.sum(1)
        # attended positions first, in their order (left, right or any padding)
        order = torch.sort((~attention).to(torch.uint8), dim=1, stable=True).indices
        user = ids.gather(1, order)
        p, s = self.prefix.numel(), self.suffix.numel()
        total = p + count + s
        out = torch.full((rows, p + width + s), self.pad_id, dtype=torch.long, device=ids.device)
        out[:, :p] = self.prefix
        columns = torch.arange(width, device=ids.device)
        out[:, p: p + width] = torch.where(columns < count[:, None], user,
                                           torch.full_like(user, self.pad_id))
        if s:
            at = p + count[:, None] + torch.arange(s, device=ids.device)
            out.scatter_(1, at, self.suffix.expand(rows, s))
        length = int(total.max())
        out = out[:, :length]
        mask = torch.arange(length, device=ids.device)[None, :] < total[:, None]
        return out, mask.long(), total - 1

    def next_token_logits(self, batch: dict) -> torch.Tensor:
        """``(B, V)`` logits of the token after each row's prompt."""
        input_ids, mask, last = self.sequences(batch)
        rows = input_ids.shape[0]
        keep = torch.zeros_like(input_ids, dtype=torch.bool)
        keep[torch.arange(rows, device=keep.device), last] = True
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if self.image_block is not None:
            pixels = batch[self.image_block]
            if self.image_inputs is not None:
                images = self.image_inputs(pixels)
                pixels = images.pop("pixel_values")
                kwargs.update(images)
            elif self.normalize is not None:
                pixels = self.normalize(pixels)
            kwargs["pixel_values"] = pixels.to(_dtype(self.model, pixels.dtype))
        logits = self.model(**kwargs, logits_to_keep=keep).logits
        if logits.ndim == 3:    # a model that ignores a mask-valued logits_to_keep
            logits = logits[torch.arange(rows, device=logits.device), last]
        return logits.reshape(rows, -1)

    def log_masses(self, batch: dict) -> torch.Tensor:
        """``(B, C)``: per class, the log probability mass of its label tokens."""
        logp = torch.log_softmax(self.next_token_logits(batch).float(), dim=-1)
        return torch.stack([torch.logsumexp(logp[:, getattr(self, f"class_ids_{c}")], dim=-1)
                            for c in range(len(self.class_token_ids))], dim=-1)

    def unsafe_score(self, batch: dict) -> torch.Tensor:
        """``(B,)``: the score ``copy_threshold`` is compared with (see ``score``)."""
        return unsafe_score(self.log_masses(batch), self.score)

    def forward(self, batch: dict) -> torch.Tensor:
        masses = self.log_masses(batch)
        if self.copy_threshold is None:
            return masses
        scores = unsafe_score(masses, self.score)
        if torch.isnan(scores).any():     # NaN >= t is False: it would count as Safe
            raise ValueError("the guard's unsafe score is NaN for some copies (both label "
                             "masses 0?); no copy decision is made from it")
        return (scores >= self.copy_threshold).long()


def unsafe_score(log_masses: torch.Tensor, score: str) -> torch.Tensor:
    """Class 1's score from ``(B, 2)`` log masses: its mass, or its log-mass margin over
    class 0."""
    if score == "mass":
        return log_masses[:, 1].exp()
    return log_masses[:, 1] - log_masses[:, 0]


def check_operating_point(score: str, copy_threshold, num_classes: int):
    """Validated ``(score, copy_threshold)`` of a guard's per-copy decision."""
    if score not in SCORES:
        raise ValueError(f"score must be 'mass' or 'margin', got {score!r}")
    if copy_threshold is None:
        return score, None
    if num_classes != 2:
        raise ValueError(f"copy_threshold needs two labels (safe, unsafe), got {num_classes}")
    if isinstance(copy_threshold, bool) or not isinstance(copy_threshold, (int, float)):
        raise ValueError(f"copy_threshold must be a number, got {copy_threshold!r}")
    t = float(copy_threshold)
    if score == "mass" and not 0 < t <= 1:
        raise ValueError(f"copy_threshold on the 'mass' score must be in (0, 1], got {t!r}")
    if not math.isfinite(t):
        raise ValueError(f"copy_threshold must be finite, got {t!r}")
    return score, t


def vlm_guard(model: nn.Module, processor, *, policy: str = DEFAULT_POLICY,
              labels: Sequence[str] = ("Safe", "Unsafe"),
              label_token_ids: Sequence[Sequence[int]] | None = None,
              max_text_tokens: int = 256, user_template: str = USER_TEMPLATE,
              image_block: str | None = "image", text_block: str = "text",
              truncate: bool = False, raw_size: tuple[int, int] | None = None,
              score: str = "mass", copy_threshold: float | None = None,
              image_processor=None, name: str = "") -> ModelAdapter:
    """A :class:`ModelAdapter` for a generative guard (LLaVA-Guard style).

    Parameters
    ----------
    model : transformers vision-language model (e.g. ``LlavaForConditionalGeneration``)
    processor : transformers processor
        With ``tokenizer``, ``image_processor`` (unless ``image_block`` is None) and a chat
        template; or, with ``raw_size``, a tokenizer with a chat template and
        ``image_processor`` given apart (e.g. LLaVA-OneVision without its video processor).
    policy : str
        The policy prompt placed before the user's content.
    labels : sequence of str
        Class names in class order (default: 0 = Safe, 1 = Unsafe); each class's score is the
        mass of every single-token variant of its name (case, a leading space or newline).
    label_token_ids : sequence of sequence of int, optional
        The label-token ids per class, given explicitly instead.
    max_text_tokens : int
        Longest user text in tokens (longer: refused, or cut with ``truncate``).
    user_template : str
        The user turn, with ``{policy}`` and ``{text}`` placeholders.
    image_block : str or None
        Block of the image; None for a text-only guard.
    raw_size : (int, int), optional
        ``(height, width)``: noise the raw image at this size and run the model's whole
        image processor (tiling, resizing, normalization) on each noisy copy, inside the
        classifier.  Needed for tiled ("anyres") processors (LLaVA-NeXT, LLaVA-OneVision);
        the certified L2 ball is then in raw pixels at this size.  None: the processor's
        resize/crop runs before the noise (single-crop processors only).
    score : {"mass", "margin"}
        What ``copy_threshold`` compares: P(Unsafe label tokens), or
        log P(Unsafe) - log P(Safe).
    copy_threshold : float, optional
        A copy is Unsafe (class 1) iff its score is at least this; None (default): the
        class with the larger label mass.  Two labels only.
    image_processor : transformers image processor, optional
        Used instead of ``processor.image_processor``.

    Returns
    -------
    ModelAdapter
        ``text[text_block]`` encodes the user's text alone (no special tokens; the model's
        special ids excluded from the noisable set); ``images[image_block]`` is the
        processor's geometry (a :class:`~hybridcert.adapters.tiled.RawImageProcessor` with
        ``raw_size``); ``model`` a :class:`GuardClassifier`.
    """
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None and hasattr(processor, "convert_tokens_to_ids"):
        tokenizer = processor        # a tokenizer with a chat template; images given apart
    if tokenizer is None:
        raise ValueError("vlm_guard needs a processor with a tokenizer (or a tokenizer with "
                         "a chat template and image_processor=)")
    if "{text}" not in user_template:
        raise ValueError("user_template must contain {text}")
    check_operating_point(score, copy_threshold, len(labels))
    content = [{"type": "image"}] if image_block is not None else []
    turn = user_template.replace("{policy}", policy).replace("{text}", _SENTINEL)
    content.append({"type": "text", "text": turn})
    try:
        prompt = processor.apply_chat_template([{"role": "user", "content": content}],
                                               add_generation_prompt=True, tokenize=False)
    except Exception as err:  # no chat template, or one that rejects the turn
        raise ValueError(f"the processor's chat template cannot render the guard prompt "
                         f"({type(err).__name__}: {err})") from None
    if prompt.count(_SENTINEL) != 1:
        raise ValueError("the chat template must place the user's text exactly once")
    before, after = prompt.split(_SENTINEL)
    images = normalize = image_inputs = None
    if image_block is not None:
        if image_processor is None:
            image_processor = getattr(processor, "image_processor", None)
        if image_processor is None:
            raise ValueError("vlm_guard with an image block needs processor.image_processor "
                             "(or image_block=None for a text-only guard)")
        if raw_size is not None:
            images = RawImageProcessor.build(image_processor, raw_size)
            image_inputs = images.inputs(forward_arguments(model))
            prefix = _tiled_prefix(model, tokenizer, before,
                                   image_inputs(torch.zeros(1, 3, *images.size)))
        else:
            if tokenizer is processor:
                raise ValueError("without raw_size, vlm_guard needs the model's processor "
                                 "(it expands the image tokens), not a tokenizer")
            images = HFImageProcessor.build(image_processor)
            normalize = images.normalize()
            from PIL import Image

            probe = Image.new("RGB", images.size[::-1])
            prefix = processor(text=[before], images=[probe], add_special_tokens=False,
                               truncation=False, return_tensors="pt")["input_ids"][0].tolist()
    elif raw_size is not None:
        raise ValueError("raw_size needs an image block (image_block is None)")
    else:
        prefix = tokenizer(before, add_special_tokens=False)["input_ids"]
    suffix = tokenizer(after, add_special_tokens=False)["input_ids"]
    image_ids = _image_token_ids(processor, model)
    special = special_ids(tokenizer) | image_ids       # never noised, never from user text
    noisable = [i for i in range(len(tokenizer)) if i not in special]
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        pad = min(special - image_ids) if special - image_ids else None
    if pad is None:
        raise ValueError("the tokenizer has no pad, eos or other special id to pad rows with")

    # User text is data: special-token parsing off, and no special or image id may come out.
    forbidden = special - {getattr(tokenizer, "unk_token_id", None)}
    tokenizer_name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__

    def encode_ids(text: str) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        check_user_ids(ids, forbidden, tokenizer_name, tokenizer.convert_ids_to_tokens)
        return ids

    mask = getattr(tokenizer, "mask_token_id", None)
    vocabulary = Vocabulary(torch.tensor(noisable), mask_id=None if mask is None else int(mask))
    encoder = TextEncoder(encode_ids, vocabulary, int(pad),
                          max_text_tokens, truncate=truncate,
                          name=getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
                          special_tokens=hf_special_tokens(tokenizer),
                          id_to_token=hf_id_to_token(tokenizer))
    classes = label_token_ids if label_token_ids is not None else \
        [label_tokens(tokenizer, label) for label in labels]
    if len(classes) != len(labels):
        raise ValueError(f"label_token_ids has {len(classes)} classes but labels has "
                         f"{len(labels)}")
    _check_classes(classes, labels, len(tokenizer))
    classifier = GuardClassifier(model, prefix, suffix, classes, pad, normalize,
                                 image_block=image_block, text_block=text_block,
                                 image_inputs=image_inputs, score=score,
                                 copy_threshold=copy_threshold)
    return ModelAdapter(classifier, text={text_block: encoder},
                        images={} if images is None else {image_block: images},
                        num_classes=len(labels), class_names=[str(x).lower() for x in labels],
                        name=name or f"guard:{type(model).__name__}")


def _tiled_prefix(model: nn.Module, tokenizer, before: str, inputs: dict) -> list[int]:
    """The prompt before the user's text, its one image token expanded to as many copies as
    the model makes image features of an image of the raw size (fixed by that size)."""
    config = getattr(model, "config", None)
    image_id = getattr(config, "image_token_id", None)
    if image_id is None:
        image_id = getattr(config, "image_token_index", None)
    if image_id is None:
        raise ValueError(f"{type(model).__name__}'s config names no image_token_id")
    ids = tokenizer(before, add_special_tokens=False)["input_ids"]
    if ids.count(int(image_id)) != 1:
        raise ValueError(f"the rendered prompt holds {ids.count(int(image_id))} image tokens "
                         f"(id {image_id}) before the user's text; a tiled guard needs one")
    count = image_token_count(model, inputs)
    at = ids.index(int(image_id))
    return ids[:at] + [int(image_id)] * count + ids[at + 1:]


def label_tokens(tokenizer, label: str) -> list[int]:
    """Ids of every variant of ``label`` that the tokenizer writes as one token: the label
    in four cases, alone or after a space, newline or tab."""
    ids = set()
    for lead in ("", " ", "\n", "\t"):
        for word in (label, label.lower(), label.upper(), label.capitalize()):
            encoded = tokenizer(lead + word, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.add(int(encoded[0]))
    return sorted(ids)


def _check_classes(classes, labels, vocab_size: int) -> None:
    seen: dict[int, int] = {}
    for c, ids in enumerate(classes):
        if not ids:
            raise ValueError(f"label {labels[c]!r} is not a single token in any variant; give "
                             f"label_token_ids")
        for i in ids:
            if not 0 <= int(i) < vocab_size:
                raise ValueError(f"label token id {i} is outside the vocabulary (0.."
                                 f"{vocab_size - 1})")
            if int(i) in seen and seen[int(i)] != c:
                raise ValueError(f"token id {i} counts for both {labels[seen[int(i)]]!r} and "
                                 f"{labels[c]!r}")
            seen[int(i)] = c


def _image_token_ids(processor, model) -> set[int]:
    """The image placeholder id(s) that the processor expands, wherever the model states it."""
    config = getattr(model, "config", None)
    found = (getattr(processor, "image_token_id", None),
             getattr(getattr(processor, "tokenizer", None), "image_token_id", None),
             getattr(config, "image_token_index", None), getattr(config, "image_token_id", None))
    return {int(i) for i in found if isinstance(i, int) and not isinstance(i, bool)}


def _dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (StopIteration, AttributeError, TypeError):
        return default
