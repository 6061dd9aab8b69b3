"""Landmarks -> aligned face chips: one similarity transform, used by every model.

The age, gender and embedding models were trained on dlib "face chips" (dlib's
`get_face_chip_details`), so chips are cut to the same geometry: the 5 landmarks are
mapped onto a template in dlib's unit face space, padded, and scaled to the chip size.
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


def chip_transform(landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """2x3 matrix taking image pixels to chip pixels for a `size` chip with dlib's `padding`."""
    target = (padding + MTCNN_TEMPLATE) / (2 * padding + 1) * size
    return similarity_transform(landmarks, target)


def extract_chip(image: np.ndarray, landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """Cut one aligned size x size chip (same channel order as `image`).

    When the chip is much smaller than the face, the image is first shrunk with area
    averaging, as dlib does with its pyramid, so a 32 px chip is not an aliased sample.
    """
    matrix = chip_transform(landmarks, size, padding)
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


def extract_chips(image: np.ndarray, landmarks_list, size: int, padding: float) -> np.ndarray:
    """Chips for several faces of one image, as one N x size x size x 3 uint8 array."""
    if not len(landmarks_list):
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([extract_chip(image, lm, size, padding) for lm in landmarks_list])
