"""Kiosk display mode: keeps a full-screen window process (edge/kiosk_window.py) fed with the newest frame.

The daemon loop only swaps its frame into a LatestView; this module's thread sends the newest one whenever
the window asks, so a slow screen drops frames and never holds up the pipeline. Drawing happens in the
window process, off the daemon's CPU time and GIL. A window that cannot open (X not up yet at boot) or
that dies (X restarted) is reopened every REOPEN_EVERY_S, with one warning per outage.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import struct
import subprocess
import sys
import threading

from .config import PROJECT_ROOT, ConfigError, DisplayConfig
from .live import LatestView

log = logging.getLogger(__name__)

REOPEN_EVERY_S = 5.0


def _has_tk() -> bool:
    try:
        return importlib.util.find_spec("tkinter") is not None and importlib.util.find_spec("PIL.ImageTk") is not None
    except ImportError:
        return False


class Kiosk:
    def __init__(self, view: LatestView, cfg: DisplayConfig):
        if not _has_tk():
            raise ConfigError("config error: display.enabled: the kiosk window needs tkinter and Pillow's ImageTk "
                              "(Debian / Raspberry Pi OS: apt install python3-tk python3-pil.imagetk)")
        self.view = view
        self.cfg = cfg
        self.shown = 0                      # frames sent to the window (fewer than processed: newest wins)
        self.window_open = threading.Event()
        self._stop = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="kiosk", daemon=True)

    def start(self) -> "Kiosk":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            try:
                process.stdin.close()       # the window quits on end of input
            except OSError:
                pass
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        outage = False
        while not self._stop.is_set():
            command = [sys.executable, "-m", "edge.kiosk_window", "--max-fps", str(self.cfg.max_fps)]
            if not self.cfg.fullscreen:
                command.append("--windowed")
            self._process = process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                                                       stdout=subprocess.PIPE)
            error = self._feed(process)
            self.window_open.clear()
            if self._stop.is_set():
                break
            code = process.wait()
            if error is None:
                log.warning("display: kiosk window closed (exit code %s); reopening", code)
                outage = False
            elif not outage:                # one line per outage, like the camera
                log.warning("display: cannot open the screen (%s); retrying every %.0f s", error, REOPEN_EVERY_S)
                outage = True
            self._stop.wait(REOPEN_EVERY_S)

    def _feed(self, process: subprocess.Popen) -> str | None:
        """Send the newest view whenever the window says `ready`, until it exits. Returns its start-up error."""
        seq = 0
        try:
            for raw in process.stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith("error "):
                    return line[6:]
                if line.startswith("open"):
                    log.info("display: kiosk window on %s", line[5:] or "the default screen")
                    self.window_open.set()
                    continue
                if line != "ready":
                    continue
                view = None
                while view is None and not self._stop.is_set():
                    view = self.view.wait_newer(seq, timeout=0.5)
                if view is None:
                    return None
                seq = view.seq
                data = pickle.dumps((view.image, view.faces, view.status, view.banner), protocol=pickle.HIGHEST_PROTOCOL)
                process.stdin.write(struct.pack(">I", len(data)) + data)
                process.stdin.flush()
                self.shown += 1
        except (BrokenPipeError, ValueError, OSError):
            pass                            # the window went away mid-frame (stdin closed by stop() or X died)
        return None
