"""OpenCV capture: V4L2/USB device index, video file, RTSP URL or GStreamer pipeline."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from . import SourceError

MAX_BAD_READS = 25   # consecutive failed or corrupt reads before a live source counts as lost


def _quiet_opencv_retries() -> None:
    """OpenCV's own warnings (`can't open camera by index`) said it once; the grabber logs one line per outage,
    so they must not repeat on every retry. OPENCV_LOG_LEVEL, when set, is the user's choice and wins."""
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def classify(spec: str) -> str:
    spec = spec.strip()
    if spec.isdigit():
        return "device"
    if "!" in spec:
        return "gstreamer"
    if "://" in spec:
        return "stream"
    return "file"


class OpenCvSource:
    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15):
        self.spec = spec.strip()
        self.kind = classify(self.spec)
        self.is_file = self.kind == "file"
        self.width, self.height, self.fps = width, height, fps
        self.capture: cv2.VideoCapture | None = None
        self.description = f"{self.kind} {self._redacted()}"
        self._bad_frames = 0

    def _redacted(self) -> str:
        # rtsp://user:password@host/... must never reach a log.
        if self.kind == "stream" and "@" in self.spec:
            scheme, rest = self.spec.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return self.spec

    def open(self) -> None:
        if self.kind == "device":
            capture = cv2.VideoCapture(int(self.spec), cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY)
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            capture.set(cv2.CAP_PROP_FPS, self.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)   # newest frame, not a backlog
        elif self.kind == "gstreamer":
            capture = cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER)
        elif self.kind == "file":
            if not os.path.isfile(self.spec):
                raise SourceError(f"no such video file: {self.spec}")
            capture = cv2.VideoCapture(self.spec)
        else:
            capture = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            _quiet_opencv_retries()
            raise SourceError(f"cannot open {self.description}")
        self.capture = capture
        if self.is_file:
            self.fps = capture.get(cv2.CAP_PROP_FPS) or self.fps
        self._frames_read = 0
        self._bad_frames = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        if self.capture is None:
            return None
        while True:
            ok, image = self.capture.read()
            if ok and image is not None and image.ndim == 3 and image.shape[2] == 3 and image.size:
                self._bad_frames = 0
                break
            if self.is_file and not ok:
                return None          # end of the file
            # A corrupt JPEG in an MJPEG/RTSP stream fails one read() and the next one works: skip it.
            # Only a run of failures means the camera is gone (a closed stream fails instantly, so this
            # costs microseconds), and then the grabber reopens it.
            self._bad_frames += 1
            if self._bad_frames > MAX_BAD_READS:
                return None
        self._frames_read += 1
        if self.is_file:
            return image, self._frames_read / self.fps
        return image, time.time()

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None
