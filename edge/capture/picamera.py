"""Raspberry Pi camera via picamera2, imported lazily: it only exists on Raspberry Pi OS."""

from __future__ import annotations

import time

import numpy as np

from . import SourceError


class PiCameraSource:
    is_file = False

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15):
        self.width, self.height, self.fps = width, height, fps
        self.description = f"picamera2 {width}x{height}"
        self.camera = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError("picamera2 is not importable (it needs Raspberry Pi OS's python3-libcamera); "
                              "use a device index or file as source") from exc
        try:
            camera = Picamera2()
            # picamera2's "RGB888" yields arrays ordered [B, G, R]: OpenCV's order, which this pipeline uses.
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": float(self.fps)})
            camera.configure(config)
            camera.start()
        except Exception as exc:  # libcamera raises RuntimeError/OSError variants
            raise SourceError(f"cannot start the Pi camera: {exc}") from exc
        self.camera = camera

    def read(self) -> tuple[np.ndarray, float] | None:
        if self.camera is None:
            return None
        try:
            image = self.camera.capture_array("main")
        except Exception:  # the camera vanished; the grabber reopens
            return None
        return np.ascontiguousarray(image[:, :, :3]), time.time()

    def close(self) -> None:
        if self.camera is not None:
            try:
                self.camera.stop()
                self.camera.close()
            finally:
                self.camera = None
