"""Still images from disk or from an upload, with errors a person can act on (not an image, truncated, too
large, a strip no face fits in); 16-bit and float images are scaled to 8 bits, not clipped."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000   # a 40 MP photo is already far more than a face needs
MAX_BYTES = 64 * 1024 * 1024
# Wider than this and the detectors' downscaling to their working width leaves less than a pixel of height
# (a 40000x10 image crashed OpenCV's resize); no photo of a face looks like that.
MAX_ASPECT = 20


class ImageError(ValueError):
    """str() is the one line to show; `kind` sorts it for callers that report per photo
    ("missing", "too_large", "not_an_image", "damaged")."""

    def __init__(self, message: str, kind: str = "not_an_image"):
        super().__init__(message)
        self.kind = kind


def load_image(path: Path | str) -> np.ndarray:
    """Read a photo as a BGR uint8 array, upright (EXIF orientation applied)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file", "missing")
    if path.stat().st_size > MAX_BYTES:
        raise ImageError(f"{path}: file is larger than {MAX_BYTES // (1024 * 1024)} MB", "too_large")
    return _decode(path, str(path))


def decode_image(data: bytes, label: str) -> np.ndarray:
    """The same checks and result as load_image for bytes already in memory (an upload); `label` names it."""
    if len(data) > MAX_BYTES:
        raise ImageError(f"{label}: file is larger than {MAX_BYTES // (1024 * 1024)} MB", "too_large")
    return _decode(io.BytesIO(data), label)


def _decode(source, label: str) -> np.ndarray:
    try:
        with Image.open(source) as image:
            # Checked from the header alone, before any pixel is decoded: a decompression bomb stops here.
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"{label}: image is {image.width}x{image.height}, more than "
                                 f"{MAX_PIXELS // 1_000_000} megapixels; scale it down", "too_large")
            if max(image.size) > MAX_ASPECT * max(1, min(image.size)):
                raise ImageError(f"{label}: image is {image.width}x{image.height}, more than {MAX_ASPECT} times "
                                 "wider than high (or the reverse); crop it around the face", "too_large")
            image.load()   # decodes fully: a truncated file fails here, not later
            rgb = _rgb8(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: image dimensions are implausibly large (a decompression bomb?); refused",
                         "too_large") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{label}: image is damaged or truncated ({exc})", "damaged") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _rgb8(image: Image.Image) -> np.ndarray:
    """RGB uint8. Pillow's convert("RGB") clips 16-bit and 32-bit greyscale at 255 (a 16-bit PNG turns
    white), so those are scaled down by their bit depth first."""
    if image.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return np.asarray(image.convert("RGB"))     # ValueError for modes without a conversion (LAB, HSV)
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    full = _full_scale(image.mode, values.max(initial=0.0))
    grey = np.rint(np.clip(values * (255.0 / full), 0, 255)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _full_scale(mode: str, top: float) -> float:
    """The value that means white: 16-bit files hold 0..65535 whatever mode Pillow opens them in, float
    images 0..1 by convention; 32-bit data up to 255 is 8-bit data; anything else is stretched to its maximum."""
    if mode.startswith("I;16"):
        return 65535.0
    if mode == "F" and top <= 1.0:
        return 1.0
    for full in (255.0, 65535.0):
        if top <= full:
            return full
    return top
