"""How an image file becomes the continuous block the noise is added to.

Noise is added in [0, 1] pixel space *after* the model's geometric preprocessing (resize,
crop) and *before* its normalization, which the model (or its adapter) applies itself: the
certified L2 radius is then a radius in the pixels the model actually sees.
"""

from __future__ import annotations

import stat
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

#: Largest image accepted by default (pixels); larger files are refused, never decoded.
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image that cannot be used without a silent change, or cannot be read safely."""


@dataclass(frozen=True)
class ImageProcessor:
    """Image -> ``(C, H, W)`` float32 tensor in [0, 1] for one continuous block.

    Parameters
    ----------
    size : (int, int) or None
        ``(height, width)`` the model expects; None accepts any size as it is.
    resize : str
        What to do with an image of another size: ``"refuse"`` (default: one-line error),
        ``"resize"`` (bilinear, aspect ratio not kept) or ``"shortest_edge_crop"`` (scale the
        shorter side to fit, bicubic, then centre-crop, as CLIP's processor does).  Every
        change is reported to the run log.
    mode : str
        Pillow colour mode the model expects (``"RGB"`` or ``"L"``); other modes are
        converted and the conversion reported.
    max_pixels : int
        Larger images are refused before decoding (decompression bombs).
    """

    size: tuple[int, int] | None = None
    resize: str = "refuse"
    mode: str = "RGB"
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if self.resize not in ("refuse", "resize", "shortest_edge_crop"):
            raise ValueError(f"resize must be 'refuse', 'resize' or 'shortest_edge_crop', got "
                             f"{self.resize!r}")
        if self.mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {self.mode!r}")
        if self.size is not None:
            size = tuple(self.size)
            if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                     for s in size):
                raise ValueError(f"size must be (height, width) positive integers, got "
                                 f"{self.size!r}")
            object.__setattr__(self, "size", size)

    @classmethod
    def sized(cls, processor: ImageProcessor | None, size: tuple[int, int] | None,
              block: str = "image") -> ImageProcessor:
        """The model's processor for ``block`` (None: a default one), sized by ``size``
        (``--image-size``, height x width) when the model states none: images are then
        resized to it (unless the model's own resize mode says otherwise).  The one place a
        run (``certify``) and the service size images; ValueError when ``size`` conflicts
        with the model's own size."""
        size = None if size is None else tuple(size)
        if processor is None:
            return cls(size=size, resize="resize") if size else cls()
        if size is None or processor.size == size:
            return processor
        if processor.size is not None:
            raise ValueError(f"image_size {size[1]}x{size[0]} conflicts with the model's image "
                             f"size {processor.size[1]}x{processor.size[0]} for block "
                             f"{block!r}")
        resize = "resize" if processor.resize == "refuse" else processor.resize
        return replace(processor, size=size, resize=resize)

    def load(self, path: str | Path) -> tuple[torch.Tensor, list[str]]:
        """Read an image file; returns the tensor and the changes made (for the run log)."""
        return self.process(open_image(path, self.max_pixels))

    def process(self, image) -> tuple[torch.Tensor, list[str]]:
        """A PIL image -> tensor in [0, 1] and the list of changes made."""
        from PIL import Image

        changes = []
        if image.mode != self.mode:
            changes.append(f"colour mode {image.mode} -> {self.mode}")
            image = image.convert(self.mode)
        if self.size is not None and (image.height, image.width) != self.size:
            h, w = self.size
            if self.resize == "refuse":
                raise ImageError(f"image is {image.width}x{image.height} but the model takes "
                                 f"{w}x{h} (the model's ImageProcessor refuses other sizes: "
                                 f"resize the image, or build the processor with "
                                 f"resize='resize')")
            changes.append(f"{self.resize} {image.width}x{image.height} -> {w}x{h}")
            if self.resize == "resize":
                image = image.resize((w, h), Image.BILINEAR)
            else:
                scale = max(h / image.height, w / image.width)
                scaled = (max(w, round(image.width * scale)), max(h, round(image.height * scale)))
                image = image.resize(scaled, Image.BICUBIC)
                left, top = (scaled[0] - w) // 2, (scaled[1] - h) // 2
                image = image.crop((left, top, left + w, top + h))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), changes

    @property
    def space(self) -> str:
        """Where the noise is added, hence where a certified L2 radius lives (one line)."""
        if self.size is None:
            return "pixels in [0, 1] as loaded"
        h, w = self.size
        return f"pixels in [0, 1] at {w}x{h}, the model's input"

    def describe(self) -> dict:
        return {"size": self.size, "resize": self.resize, "mode": self.mode,
                "space": self.space}

    @classmethod
    def from_hf(cls, image_processor, max_pixels: int = MAX_PIXELS) -> ImageProcessor:
        """The geometric part of a ``transformers`` image processor (resize, crop, rescale
        to [0, 1]), run by that processor itself; its normalization is left to the model,
        after the noise (see :class:`hybridcert.adapters.hf.HFImageProcessor`)."""
        from hybridcert.adapters.hf import HFImageProcessor

        return HFImageProcessor.build(image_processor, max_pixels=max_pixels)


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS):
    """Open an image file safely: a regular file (never blocks on a FIFO or a device), a
    decodable image, at most ``max_pixels`` (decompression bombs refused).

    Raises :class:`ImageError` (one line).
    """
    return decode_image(read_image_file(path), str(path), max_pixels)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
#: Largest image file read into memory (bytes); larger files are refused unread.
MAX_FILE_BYTES = 256 * 1024 * 1024


def read_image_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file: a regular file of at most ``max_bytes``.

    The file is opened non-blocking and checked on the open descriptor, so a FIFO, a device
    or a file swapped for one after a check never blocks.  Raises :class:`ImageError`.
    """
    import os

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(f"image {path} not found") from None
    except OSError as err:
        raise ImageError(f"image {path} cannot be read ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"image {path} is not a regular file")
        if info.st_size > max_bytes:
            raise ImageError(f"image {path} has {info.st_size:,} bytes, more than the "
                             f"{max_bytes:,} allowed")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise ImageError(f"image {path} cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageError(f"image {path} has more than the {max_bytes:,} bytes allowed")
    return data


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS):
    """Decode image file bytes like :func:`open_image` (at most ``max_pixels``, decompression
    bombs refused, no zero-size image); ``name`` is used in errors.  Raises
    :class:`ImageError` (one line)."""
    import io

    from PIL import Image, UnidentifiedImageError

    what = name if name == "image" else f"image {name}"
    # Pillow cannot identify a PNG of 0 rows or columns: its header says what is wrong.
    _check_not_empty(header_size(data), what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > max_pixels:
                    raise ImageError(f"{what} has {image.width}x{image.height} pixels, "
                                     f"more than the {max_pixels:,} allowed")
                _check_not_empty(image.size, what)
                image.load()
                return image.copy()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{what} is too large to decode safely") from None
    except UnidentifiedImageError:
        raise ImageError(f"{what} is not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ImageError(f"{what} cannot be decoded ({err})") from None


def _check_not_empty(size: tuple[int, int] | None, what: str) -> None:
    if size is not None and 0 in size:
        raise ImageError(f"{what} has zero size ({size[0]}x{size[1]} pixels): it holds no "
                         f"picture to certify")


#: JPEG start-of-frame markers (they hold the image size): C0-CF but DHT, JPG and DAC.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk or a JPEG's start-of-frame segment, read from
    the bytes without decoding; None where the header is not where the format puts it (the
    caller then asks Pillow)."""
    if data.startswith(PNG_MAGIC):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        return None
    if not data.startswith(JPEG_MAGIC):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:                       # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:   # segments without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):               # end of image, start of scan: no frame yet
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _JPEG_FRAMES:
            if length < 7 or i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return (width, height) if height else None     # 0: the height comes later (DNL)
        if length < 2:
            return None
        i += 2 + length
    return None
