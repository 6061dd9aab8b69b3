"""Still images from disk, with errors a person can act on (not an image, truncated, too large)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000   # a 40 MP photo is already far more than a face needs
MAX_BYTES = 64 * 1024 * 1024


class ImageError(ValueError):
    pass


def load_image(path: Path | str) -> np.ndarray:
    """Read a photo as a BGR uint8 array, upright (EXIF orientation applied)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size > MAX_BYTES:
        raise ImageError(f"{path}: file is larger than {MAX_BYTES // (1024 * 1024)} MB")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"{path}: image is {image.width}x{image.height}, more than "
                                 f"{MAX_PIXELS // 1_000_000} megapixels; scale it down")
            image.load()   # decodes fully: a truncated file fails here, not later
            image = ImageOps.exif_transpose(image).convert("RGB")
            rgb = np.asarray(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: image dimensions are implausibly large") from None
    except (OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: image is damaged or truncated ({exc})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])
