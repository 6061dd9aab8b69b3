"""OpenCV capture: V4L2/USB device index, video file, RTSP URL or GStreamer pipeline."""

from __future__ import annotations

import logging
import os
import time

import cv2
import numpy as np

from . import SourceError

log = logging.getLogger(__name__)

# FFmpeg prints every damaged macroblock at error level: one corrupt file wrote 29,684 stderr lines (all to
# journald). Fatal only; damage is counted and logged in one line instead (_report_damage). Read when a capture is created;
# set OPENCV_FFMPEG_LOGLEVEL=16 (error) or 32 (info) to see FFmpeg's own messages again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")

MAX_BAD_READS = 25   # consecutive failed or corrupt reads before a live source counts as lost (a file: ended)


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
        self.skipped_frames = 0       # a file's corrupt frames skipped, this pass
        self._damage_reported = False

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
            if self.is_file:
                raise SourceError(f"cannot decode video file {self.spec} (corrupt, truncated, still being "
                                  "written, or a format this OpenCV build cannot read)")
            raise SourceError(f"cannot open {self.description}")
        self.capture = capture
        if self.is_file:
            self.fps = capture.get(cv2.CAP_PROP_FPS) or self.fps
        self._frames_read = 0
        self._bad_frames = 0
        self.skipped_frames = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        if self.capture is None:
            return None
        while True:
            ok, image = self.capture.read()
            if ok and image is not None and image.ndim == 3 and image.shape[2] == 3 and image.size:
                break
            # A corrupt JPEG in an MJPEG/RTSP stream fails one read() and the next one works: skip it.
            # A damaged video file is the same: FFmpeg fails the damaged frames and decodes on from the
            # next good one (a file with 4 KB of garbage in the middle stopped at frame 98 of 240 when the
            # first failure meant "end"). Only a run of failures means the camera is gone or the file has
            # ended (both fail instantly, so this costs microseconds).
            self._bad_frames += 1
            if self._bad_frames > MAX_BAD_READS:
                if self.is_file:
                    self._report_damage()
                return None
        if self.is_file:
            self.skipped_frames += self._bad_frames
        self._bad_frames = 0
        self._frames_read += 1
        if self.is_file:
            # Position in the file, skipped frames included, so durations stay true to the video.
            return image, (self._frames_read + self.skipped_frames) / self.fps
        return image, time.time()

    def _report_damage(self) -> None:
        """One line per file (not per loop pass) when frames were skipped or the end could not be read."""
        total = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.capture is not None else 0
        unreadable = max(0, total - self._frames_read - self.skipped_frames)
        if self._damage_reported or not (self.skipped_frames or unreadable):
            return
        self._damage_reported = True
        of_total = f" of {total}" if total > 0 else ""
        tail = f"; the last {unreadable} could not be read (truncated or corrupt)" if unreadable else ""
        log.warning("video file %s is damaged: %d frames%s decoded, %d corrupt frame(s) skipped%s",
                    self.spec, self._frames_read, of_total, self.skipped_frames, tail)

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None
