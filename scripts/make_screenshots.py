#!/usr/bin/env python3
"""Rebuild docs/kiosk.jpg and docs/status-page.jpg from the bundled demo (redistributable; never from other photos).

Runs `edge run --display` with the status page on the demo video and gallery, on a private Xvfb screen, and
keeps the first kiosk screenshot and page screenshot (headless Chromium) that show both people boxed: the
enrolled one in the known colour and the other in the unknown colour. Needs Xvfb and chromium (apt). Run from the project root: `python -m scripts.make_screenshots`.
"""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageGrab

from edge.overlay import KNOWN_COLOUR, UNKNOWN_COLOUR

ROOT = Path(__file__).resolve().parent.parent

DEMO = ROOT / "edge" / "demo"
DOCS = ROOT / "docs"
SCREEN = (800, 600)
PAGE = (1100, 700)
MAX_BYTES = 150_000


def both_boxed(image_bgr: np.ndarray) -> bool:
    def pixels(bgr):
        return int(np.all(np.abs(image_bgr.astype(int) - np.array(bgr)) <= 30, axis=2).sum())
    return pixels(KNOWN_COLOUR) > 300 and pixels(UNKNOWN_COLOUR) > 300


def save_small(image_bgr: np.ndarray, path: Path) -> int:
    """JPEG at the best quality that fits MAX_BYTES."""
    picture = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    for quality in (90, 85, 80, 75, 70, 60):
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= MAX_BYTES:
            break
    path.write_bytes(buffer.getvalue())
    return buffer.tell()


def start_xvfb(log: Path) -> tuple[subprocess.Popen, str]:
    """Xvfb on a free display number; -noreset: it would otherwise reset (refusing connections for a
    moment) each time its last client disconnects, e.g. after every screenshot."""
    read_end, write_end = os.pipe()
    with open(log, "w") as err:
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                                 "-nolisten", "tcp", "-noreset"], pass_fds=[write_end], stderr=err)
    os.close(write_end)
    # Read up to the newline: Xvfb writes the number and "\n" separately and exits if the pipe is closed between.
    number = b""
    while not number.endswith(b"\n") and select.select([read_end], [], [], 15)[0]:
        chunk = os.read(read_end, 16)
        if not chunk:
            break
        number += chunk
    os.close(read_end)
    display = ":" + number.decode().strip()
    for _ in range(50):
        try:
            ImageGrab.grab(xdisplay=display)
            return xvfb, display
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"Xvfb {display} does not accept connections (exit code {xvfb.poll()}): {log.read_text()}")


def main() -> int:
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-shots-") as tmp:
        db = Path(tmp) / "demo.db"
        for photo in sorted((DEMO / "gallery").glob("*.jpg")):
            subprocess.run([sys.executable, "-m", "edge", "enroll", photo.stem, str(photo),
                            "--set", f"store.path={db}"], cwd=ROOT, check=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        xvfb, display = start_xvfb(Path(tmp) / "xvfb.log")
        edge = subprocess.Popen([sys.executable, "-m", "edge", "run", "--display", "--source", str(DEMO / "demo.mp4"),
                                 "--set", "capture.loop=true", "--set", "mqtt.enabled=false",
                                 "--set", f"store.path={db}", "--set", "web.enabled=true",
                                 "--set", f"web.port={port}", "--set", "device=demo-box", "--set", "camera=corridor"],
                                cwd=ROOT, env={**os.environ, "DISPLAY": display})
        try:
            kiosk = page = None
            # Past one full loop of the video, so the page lists every kind of event.
            deadline, not_before = time.monotonic() + 120, time.monotonic() + 25
            while (kiosk is None or page is None) and time.monotonic() < deadline:
                shot = cv2.cvtColor(np.asarray(ImageGrab.grab(xdisplay=display)), cv2.COLOR_RGB2BGR)
                if kiosk is None and time.monotonic() > not_before and both_boxed(shot):
                    kiosk = shot
                if page is None and time.monotonic() > not_before:
                    target = Path(tmp) / "page.png"
                    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                    f"--user-data-dir={tmp}/profile", f"--window-size={PAGE[0]},{PAGE[1]}",
                                    f"--screenshot={target}", f"http://127.0.0.1:{port}/"],
                                   capture_output=True, timeout=60)
                    candidate = cv2.imread(str(target))
                    if candidate is not None and both_boxed(candidate):
                        page = candidate
                time.sleep(0.1)
        finally:
            edge.terminate()
            edge.wait(60)
            xvfb.terminate()
        if kiosk is None or page is None:
            print("no screenshot with both people boxed within 120 s", file=sys.stderr)
            return 1
        for name, image in (("kiosk.jpg", kiosk), ("status-page.jpg", page)):
            size = save_small(image, DOCS / name)
            print(f"docs/{name}: {image.shape[1]} x {image.shape[0]}, {size / 1000:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
