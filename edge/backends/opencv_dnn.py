"""OpenCV DNN backend: ONNX files on the CPU, or on CUDA when OpenCV was built with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import register


def opencv_cuda_available() -> bool:
    import cv2
    try:
        return cv2.cuda.getCudaEnabledDeviceCount() > 0
    except (AttributeError, cv2.error):
        return False


@register("opencv")
class OpenCvDnnBackend:
    name = "opencv"
    file_format = "onnx"
    generic_rank, generic_why = 2, "only OpenCV DNN is available"
    max_batch = 0

    @staticmethod
    def probe() -> str | None:
        try:
            import cv2
        except ImportError:
            return None
        return cv2.__version__

    def __init__(self, path: Path, threads: int = 0, **_ignored):
        import cv2

        self.net = cv2.dnn.readNetFromONNX(str(path))
        if opencv_cuda_available():
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            self.device = "CUDA"
        else:
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            self.device = "CPU"
        if threads:
            cv2.setNumThreads(threads)
        self._out_names = self.net.getUnconnectedOutLayersNames()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.net.setInput(np.ascontiguousarray(batch, dtype=np.float32))
        return [np.asarray(o) for o in self.net.forward(self._out_names)]
