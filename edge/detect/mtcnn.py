"""MTCNN face detector: the P-Net / R-Net / O-Net cascade in numpy on top of any Backend.

Owns the image pyramid, box generation, NMS, box regression, crops and landmark decoding; the backends
only run tensors. Conventions follow facenet-pytorch's detect_face (the source of the weights):
boxes are (x1, y1, x2, y2) with 1-based inclusive corners inside this module, RGB input normalised as
(pixel - 127.5) / 128, landmarks ordered image-left eye, image-right eye, nose, mouth left, mouth right.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.backends import Backend, run_batched
from edge.face import Face

from . import Region, in_region, register

PER_SCALE_NMS = 0.5  # facenet-pytorch's fixed IoU for duplicates within one pyramid level


@register
class MtcnnDetector:
    """Find faces and 5 landmarks in an RGB frame with the three MTCNN nets (any backend each)."""
    type_key = "mtcnn"
    gives_landmarks = True
    smallest_face = 12          # P-Net's window; its image pyramid starts at 12 / min_face by itself
    backend_models = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")
    file_models = ()

    def __init__(self, pnet: Backend, rnet: Backend, onet: Backend, min_face: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), scale_factor: float = 0.709,
                 nms: tuple[float, float, float] = (0.7, 0.7, 0.7)):
        """`nms`: IoU after P-Net across scales, after R-Net, and intersection-over-min after O-Net."""
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.min_face, self.thresholds, self.scale_factor, self.nms = min_face, thresholds, scale_factor, nms

    @classmethod
    def from_config(cls, cfg, backends: dict, files: dict, fastpath=None) -> "MtcnnDetector":
        return cls(backends["mtcnn_pnet"], backends["mtcnn_rnet"], backends["mtcnn_onet"], min_face=cfg.min_face,
                   thresholds=cfg.mtcnn_thresholds)

    def detect(self, rgb: np.ndarray, region: Region | None = None) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB image (or its `region`), sorted left to right, in full-image pixels."""
        return sorted(in_region(self._detect, rgb, region), key=lambda f: f.box[0])

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        boxes = self._stage1(rgb)
        if len(boxes):
            boxes = self._refine(rgb, boxes, self.rnet, 24, self.thresholds[1], self.nms[1])
        if not len(boxes):
            return []
        boxes, points = self._stage3(rgb, boxes)
        faces = []
        for b, p in zip(boxes, points):
            # 1-based inclusive corners -> 0-based x, y, w, h
            x, y = int(round(b[0] - 1)), int(round(b[1] - 1))
            w, h = int(round(b[2] - b[0] + 1)), int(round(b[3] - b[1] + 1))
            faces.append(Face(box=(x, y, w, h), score=float(b[4]), landmarks=p.astype(np.float32)))
        return sorted(faces, key=lambda f: f.box[0])

    def _stage1(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale, side, candidates = 12.0 / self.min_face, min(h, w) * 12.0 / self.min_face, []
        while side >= 12:
            # Even sizes: LiteRT's P-Net only resizes to even H/W, and every backend then sees the same input.
            hs, ws = max(int(h * scale + 1) // 2 * 2, 12), max(int(w * scale + 1) // 2 * 2, 12)
            level = cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA)
            reg, prob = _outputs(self.pnet, _normalise(level[None]))
            found = _generate(reg[0], prob[0, 1], ws / w, hs / h, self.thresholds[0])
            candidates.append(found[_nms(found, PER_SCALE_NMS)])
            scale, side = scale * self.scale_factor, side * self.scale_factor
        boxes = np.concatenate(candidates) if candidates else np.zeros((0, 9))
        boxes = boxes[_nms(boxes, self.nms[0])]
        # P-Net regression uses width without the +1 (as facenet-pytorch), later stages with it.
        bw, bh = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
        boxes[:, 0:4] += boxes[:, 5:9] * np.hstack([bw, bh, bw, bh])
        return _square(boxes[:, :5])

    def _refine(self, rgb, boxes, net, size, threshold, iou) -> np.ndarray:
        reg, prob = _outputs(net, _crops(rgb, boxes, size))
        keep = prob[:, 1] > threshold
        boxes, reg = np.column_stack([boxes[keep, :4], prob[keep, 1]]), reg[keep]
        pick = _nms(boxes, iou)
        return _square(_regress(boxes[pick], reg[pick]))

    def _stage3(self, rgb, boxes) -> tuple[np.ndarray, np.ndarray]:
        reg, marks, prob = _outputs(self.onet, _crops(rgb, boxes, 48))
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, marks = np.column_stack([boxes[keep, :4], prob[keep, 1]]), reg[keep], marks[keep]
        points = _decode_landmarks(boxes, marks)
        boxes = _regress(boxes, reg)
        pick = _nms(boxes, self.nms[2], mode="min")
        return boxes[pick], points[pick]


def onet_landmarks(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], onet: Backend,
                   enlarge: float = 1.0, passes: int = 2) -> np.ndarray:
    """5 landmarks (N, 5, 2) for faces boxed by another detector (e.g. Haar); see `onet_refine`."""
    return onet_refine(rgb, boxes, onet, enlarge, passes)[0]


def onet_refine(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], onet: Backend,
                enlarge: float = 1.0, passes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """5 landmarks (N, 5, 2) and O-Net's face probability (N,) for boxes from another detector.

    The probability lets a Haar box on wall texture be rejected: O-Net scores real faces > 0.99.

    The box is squared (as R-Net leaves it) and scaled by `enlarge`; each extra pass re-centres it with
    O-Net's own box regression, so a box from a detector with a different framing converges to MTCNN's.
    Haar frontal-face boxes are already ~1.24x MTCNN's final box, about what O-Net is fed after R-Net, so
    no enlarging is needed: on 83 LFW/people faces, enlarge 1.0 with 2 passes put the points within 4.2%
    of the eye distance of the full cascade's (1 pass 4.4%, enlarge 1.2 4.3%).
    """
    if not len(boxes):
        return np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    b = np.array([[x + 1, y + 1, x + w, y + h, 1.0] for x, y, w, h in boxes], dtype=np.float64)
    cx, cy, half = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, (b[:, 2] - b[:, 0]) * enlarge / 2
    b[:, 0], b[:, 2], b[:, 1], b[:, 3] = cx - half, cx + half, cy - half, cy + half
    b = _square(b)
    for _ in range(passes):
        reg, marks, prob = _outputs(onet, _crops(rgb, b, 48))
        points = _decode_landmarks(b, marks)
        b = _square(_regress(b, reg))
    return points.astype(np.float32), prob[:, 1].astype(np.float32)


def _outputs(backend: Backend, batch: np.ndarray) -> list[np.ndarray]:
    # Output order differs between runtimes (OpenCV DNN and LiteRT do not keep the file's order), but the
    # channel counts are distinct: 4 = box regression, 10 = landmarks, 2 = probabilities.
    return sorted(run_batched(backend, batch), key=lambda a: {4: 0, 10: 1, 2: 2}[a.shape[1]])


def _normalise(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2)


def _generate(reg, prob, sx, sy, threshold) -> np.ndarray:
    """Map P-Net cells over `threshold` back to image boxes: rows x1, y1, x2, y2, score, 4 regression."""
    ys, xs = np.nonzero(prob >= threshold)
    # Cell (x, y) sees a 12 x 12 window at stride 2 in the scaled image; +1 is MTCNN's 1-based convention.
    return np.column_stack([np.floor((2 * xs + 1) / sx), np.floor((2 * ys + 1) / sy),
                            np.floor((2 * xs + 12) / sx), np.floor((2 * ys + 12) / sy),
                            prob[ys, xs], reg[:, ys, xs].T]).astype(np.float64)


def _nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy NMS, best score first; `min` divides by the smaller area (nested boxes)."""
    x1, y1, x2, y2, s = (boxes[:, k] for k in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = np.argsort(-s, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.array(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0:4] += reg * np.column_stack([w, h, w, h])
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    # The next net sees a square crop; squaring around the centre keeps the face where it was found.
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0], out[:, 1] = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Normalised size x size crops; parts of a box outside the image are zero, as the original MTCNN."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.trunc(boxes[:, :4]).astype(int)):
        patch = np.zeros((max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1), 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, w), min(y2, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - (y1 - 1):sy1 - (y1 - 1), sx0 - (x1 - 1):sx1 - (x1 - 1)] = rgb[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return _normalise(out)


def _decode_landmarks(boxes: np.ndarray, marks: np.ndarray) -> np.ndarray:
    # O-Net gives 5 x then 5 y as fractions of the box; -1 turns MTCNN's 1-based corners into 0-based pixels.
    w, h = (boxes[:, 2] - boxes[:, 0] + 1)[:, None], (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    return np.stack([w * marks[:, :5] + boxes[:, 0:1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
