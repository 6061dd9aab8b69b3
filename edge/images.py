"""Still images from disk or from an upload, with errors a person can act on (not an image, truncated, too large)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000   # a 40 MP photo is already far more than a face needs
MAX_BYTES = 64 * 1024 * 1024


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
            image.load()   # decodes fully: a truncated file fails here, not later
            image = ImageOps.exif_transpose(image).convert("RGB")
            rgb = np.asarray(image)
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
