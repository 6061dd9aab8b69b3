"""Landmarks -> aligned face chips: one similarity transform and one warp, used by every model.

Each model says where the 5 landmarks must fall in its chip (a template in chip pixels).
The dlib-trained age, gender and embedding models use dlib "face chips" (dlib's
`get_face_chip_details`): a template in dlib's unit face space, padded and scaled to the
chip size (`dlib_chip_template`). Other models give their own template (`align_chips`).
"""

from __future__ import annotations

import cv2
import numpy as np

# Where the 5 MTCNN-style landmarks (image-left eye centre, image-right eye centre, nose tip,
# mouth left, mouth right) fall in dlib's unpadded unit face space, fitted on real faces by
# training/fit_mtcnn_template.py on 313 real faces (training/reports/mtcnn_template.json).
MTCNN_TEMPLATE = np.array([
    [0.2354828308, 0.2147711770],
    [0.7734130441, 0.2161801277],
    [0.5072818802, 0.5335185910],
    [0.2601147950, 0.8001543112],
    [0.7417084760, 0.8016293813],
], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping src -> dst (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1  # no reflections
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def dlib_chip_template(size: int, padding: float) -> np.ndarray:
    """Where the 5 landmarks fall, in chip pixels, on a `size` dlib face chip with dlib's `padding`."""
    return (padding + MTCNN_TEMPLATE) / (2 * padding + 1) * size


def chip_transform(landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """2x3 matrix taking image pixels to chip pixels for a `size` chip with dlib's `padding`."""
    return similarity_transform(landmarks, dlib_chip_template(size, padding))


def warp_chip(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut one size x size chip through the 2x3 image -> chip `matrix` (same channel order as `image`).

    When the chip is much smaller than the face, the image is first shrunk with area
    averaging, as dlib does with its pyramid, so a 32 px chip is not an aliased sample.
    """
    scale = float(np.hypot(*matrix[:, 0]))
    if scale < 0.5:
        # Crop the region the chip covers, shrink it, and fold crop+shrink into the matrix.
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        h, w = image.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = scale * 2.0  # leave a final 2x reduction to the bilinear warp
            region = image[y0:y1, x0:x1]
            new_w, new_h = max(1, round(region.shape[1] * factor)), max(1, round(region.shape[0] * factor))
            small = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
            fx, fy = new_w / region.shape[1], new_h / region.shape[0]
            to_small = np.array([[fx, 0, -x0 * fx], [0, fy, -y0 * fy], [0, 0, 1]])
            matrix = matrix @ np.linalg.inv(to_small)
            image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_chip(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """One size x size chip whose 5 landmarks best fit `template` (5 x 2, in chip pixels)."""
    return warp_chip(image, similarity_transform(landmarks, template), size)


def align_chips(image: np.ndarray, landmarks_list, template: np.ndarray, size: int) -> np.ndarray:
    """Chips aligned to `template` for several faces of one image, as one N x size x size x C uint8 array."""
    if not len(landmarks_list):
        return np.zeros((0, size, size) + image.shape[2:], np.uint8)
    return np.stack([align_chip(image, lm, template, size) for lm in landmarks_list])


def extract_chip(image: np.ndarray, landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """One aligned dlib face chip (size, padding as dlib's `get_face_chip`)."""
    return align_chip(image, landmarks, dlib_chip_template(size, padding), size)


def extract_chips(image: np.ndarray, landmarks_list, size: int, padding: float) -> np.ndarray:
    """dlib face chips for several faces of one image, as one N x size x size x 3 uint8 array."""
    return align_chips(image, landmarks_list, dlib_chip_template(size, padding), size)
