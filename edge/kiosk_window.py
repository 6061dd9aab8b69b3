"""The kiosk window process (`python -m edge.kiosk_window`): tkinter + Pillow, fed frames by edge/display.py.

A process of its own because Xlib ends the whole process when the X server goes away; here that ends only
the window, and the daemon opens a new one. Protocol: stdin carries frames (4-byte big-endian length +
pickle of (BGR image, overlay faces, status line, banner or None)); stdout carries lines `open DISPLAY`, `ready`
(send the next frame) and `error MESSAGE`.

tkinter rather than cv2.imshow: the OpenCV wheel is the headless one (no highgui), and tkinter is in the
standard library (Debian / Raspberry Pi OS: `apt install python3-tk`), with Pillow already a dependency.
"""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import sys
import threading
import time

import cv2
import numpy as np

from .overlay import draw_overlay

POLL_MS = 10


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to fit width x height, keeping the aspect ratio (the window's black background letterboxes)."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    if width < 2 or height < 2 or abs(scale - 1.0) < 1e-3:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


class FrameReader(threading.Thread):
    """Reads frames from stdin; keeps only the newest (the daemon sends one per `ready` anyway)."""

    def __init__(self, stream):
        super().__init__(name="frames", daemon=True)
        self.stream = stream
        self.lock = threading.Lock()
        self.frame = None
        self.closed = threading.Event()

    def run(self):
        try:
            while True:
                header = self.stream.read(4)
                if len(header) < 4:
                    break
                data = self.stream.read(struct.unpack(">I", header)[0])
                with self.lock:
                    self.frame = pickle.loads(data)
        finally:
            self.closed.set()

    def take(self):
        with self.lock:
            frame, self.frame = self.frame, None
        return frame


def say(line: str) -> None:
    sys.stdout.write(line.replace("\n", " ") + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windowed", action="store_true")
    parser.add_argument("--max-fps", type=float, default=15.0)
    args = parser.parse_args(argv)
    try:
        import tkinter
        from PIL import Image, ImageTk
    except ImportError as exc:
        say(f"error {exc}")
        return 2
    try:
        root = tkinter.Tk(className="edge")
    except tkinter.TclError as exc:
        say(f"error {exc}")
        return 2
    root.title("edge")
    root.configure(background="black", cursor="none")
    if not args.windowed:
        # The whole screen even with no window manager (a bare X server started by xinit on a Pi),
        # and the window manager's full-screen state when there is one.
        root.geometry(f"{root.winfo_screenwidth()}x{root.winfo_screenheight()}+0+0")
        root.attributes("-fullscreen", True)
    root.protocol("WM_DELETE_WINDOW", lambda: None)      # a kiosk is not closed by a stray click
    label = tkinter.Label(root, background="black", borderwidth=0, highlightthickness=0)
    label.pack(fill="both", expand=True)
    reader = FrameReader(sys.stdin.buffer)
    reader.start()
    interval = 1.0 / args.max_fps
    state = {"photo": None, "next_ready": 0.0, "asked": False}

    def refresh():
        if reader.closed.is_set():          # the daemon stopped or closed us
            root.quit()
            return
        frame = reader.take()
        if frame is not None:
            image, faces, status, banner = frame
            shown = fit(draw_overlay(image, faces, status, banner), root.winfo_width(), root.winfo_height())
            picture = Image.fromarray(cv2.cvtColor(shown, cv2.COLOR_BGR2RGB))
            photo = state["photo"]
            if photo is None or (photo.width(), photo.height()) != picture.size:
                state["photo"] = ImageTk.PhotoImage(picture)
                label.configure(image=state["photo"])
            else:
                photo.paste(picture)
            state["asked"] = False
            state["next_ready"] = time.monotonic() + interval
        if not state["asked"] and time.monotonic() >= state["next_ready"]:
            say("ready")                    # at most max_fps frames a second: the rest are dropped upstream
            state["asked"] = True
        root.after(POLL_MS, refresh)

    root.update_idletasks()
    say(f"open {os.environ.get('DISPLAY', '')}")
    root.after(0, refresh)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
