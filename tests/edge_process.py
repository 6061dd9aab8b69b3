"""Helpers for the reliability and service tests: `edge run` as a live subprocess, a notify socket,
an MJPEG camera served over HTTP. Everything real: processes, sockets, files."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

import conftest
from conftest import DEMO_VIDEO, ROOT, edge_command


class EdgeProcess:
    """`edge run --print-events` with stdout events and stderr lines collected live."""

    def __init__(self, *args: str, env: dict | None = None):
        self.process = subprocess.Popen(edge_command("run", "--print-events", *args), cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.pid = self.process.pid
        self.events: list[dict] = []
        self.log: list[tuple[float, str]] = []       # (monotonic time, stderr line)
        self._threads = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_out(self):
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def _read_err(self):
        for line in self.process.stderr:
            self.log.append((time.monotonic(), line.rstrip("\n")))

    def stderr(self) -> str:
        return "\n".join(line for _, line in self.log)

    def wait_until(self, predicate, timeout: float = 60, what: str = "condition") -> None:
        """Wait for `predicate(self)`; fails at once, with the log, if edge exits first."""
        def ready() -> bool:
            if predicate(self):
                return True
            if self.process.poll() is not None:
                time.sleep(0.3)   # let the readers drain
                if predicate(self):
                    return True
                raise AssertionError(f"edge exited ({self.process.returncode}) before {what}:\n{self.stderr()}")
            return False
        if not conftest.wait_until(ready, timeout):
            raise AssertionError(f"timed out waiting for {what}:\n{self.stderr()}")

    def wait_log(self, pattern: str, timeout: float = 60, after: float = 0.0) -> float:
        """Time (monotonic) of the first stderr line matching `pattern` logged after `after`."""
        found: list[float] = []

        def seen(p):
            found[:] = [t for t, line in p.log if t >= after and re.search(pattern, line)]
            return bool(found)
        self.wait_until(seen, timeout, f"log line /{pattern}/")
        return found[0]

    def wait_events(self, predicate, timeout: float = 60) -> None:
        """Wait for `predicate(events)`; an int waits for that many events."""
        if isinstance(predicate, int):
            count = predicate
            predicate = lambda events: len(events) >= count  # noqa: E731
        self.wait_until(lambda p: predicate(p.events), timeout, "events")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout)
        for t in self._threads:
            t.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.wait()


def base_args(db: Path, *extra: str, source: str | None = None, pace: str = "realtime",
              port: int | None = None) -> list[str]:
    args = ["--source", source or str(DEMO_VIDEO), "--set", f"capture.pace={pace}", "--set", f"store.path={db}",
            "--set", "mqtt.prefix=door1", "--set", "device=test-box"]
    if port is None:
        args += ["--set", "mqtt.enabled=false"]
    else:
        args += ["--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={port}"]
    return args + list(extra)


class NotifySocket:
    """A real AF_UNIX SOCK_DGRAM socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []     # (monotonic time, one KEY=VALUE field)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            now = time.monotonic()
            self.messages.extend((now, field) for field in data.decode().split("\n"))

    def fields(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, f) for t, f in self.messages if f.startswith(prefix)]

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def demo_jpegs(count: int = 240, quality: int = 80) -> list[bytes]:
    """The demo video as JPEG frames (what an IP camera's MJPEG stream carries)."""
    capture = cv2.VideoCapture(str(DEMO_VIDEO))
    frames = []
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    capture.release()
    return frames


class MjpegCamera:
    """A network camera: multipart/x-mixed-replace JPEG stream at /stream.mjpg, looping the demo frames.

    stop() closes the listening socket and every open stream (the camera vanished); start() serves
    again on the same port. `corrupt_every` replaces every Nth part with bytes that are not a JPEG;
    `stall_after` sends that many frames per connection and then keeps the connection open silently.
    """

    def __init__(self, frames: list[bytes], port: int, fps: float = 15, corrupt_every: int = 0,
                 stall_after: int = 0):
        self.frames, self.port, self.fps = frames, port, fps
        self.corrupt_every, self.stall_after = corrupt_every, stall_after
        self.server: ThreadingHTTPServer | None = None
        self.stopped = threading.Event()
        self.sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def _handler(self):
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                index = 0
                try:
                    while not camera.stopped.is_set():
                        if camera.stall_after and index >= camera.stall_after:
                            camera.stopped.wait(0.2)        # connection open, nothing sent: a hung camera
                            continue
                        jpeg = camera.frames[index % len(camera.frames)]
                        index += 1
                        if camera.corrupt_every and index % camera.corrupt_every == 0:
                            jpeg = b"\xff\xd8\xff\xe0" + os.urandom(len(jpeg) // 4)   # JPEG start, garbage body
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        camera.sent += 1
                        time.sleep(1 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass
        return Handler

    def start(self) -> "MjpegCamera":
        self.stopped.clear()
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.stopped.set()              # streaming handlers return and close their connections
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def cut_clip(first: int, last: int, path: Path) -> Path:
    """Frames first..last of the demo, then back again, so that looping does not jump (a jump starts a new track)."""
    capture = cv2.VideoCapture(str(DEMO_VIDEO))
    frames = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok or index > last:
            break
        if index >= first:
            frames.append(frame)
        index += 1
    capture.release()
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (width, height))
    for frame in frames + frames[::-1]:
        writer.write(frame)
    writer.release()
    return path
