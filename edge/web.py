"""Local status page over HTTP (standard library ThreadingHTTPServer), one thread per request:
`/` (recent events, enrolled people, live picture), `/healthz` (JSON), `/metrics` (Prometheus text),
`/snapshot.jpg` and `/stream` (MJPEG) with the overlay. Off by default; bound to 127.0.0.1 unless configured.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from .config import ConfigError, WebConfig
from .live import LiveOutputs, LiveView
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

BOUNDARY = "edgeframe"


class StatusServer:
    def __init__(self, live: LiveOutputs, cfg: WebConfig):
        self.live = live
        self.cfg = cfg
        self.httpd: ThreadingHTTPServer | None = None
        self.stopping = threading.Event()
        # Each frame is drawn and encoded once, whatever the number of viewers.
        self._jpeg_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] = (-1, b"")

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2] if self.httpd else (self.cfg.host, self.cfg.port)
        return f"http://{host}:{port}/"

    def start(self) -> None:
        try:
            self.httpd = ThreadingHTTPServer((self.cfg.host, self.cfg.port), _handler(self))
        except OSError as exc:
            where = f"cannot listen on {self.cfg.host}:{self.cfg.port}: {exc.strerror or exc}"
            if not self.cfg.optional:   # a page the user asked for and cannot open must not fail silently
                raise ConfigError(f"config error: web.port: status page {where} (another program holds it? "
                                  "choose another web.port, or set web.optional: true to run without the page)")
            # web.optional: the pipeline matters more than its status page: say why once and carry on.
            log.error("status page: %s; web page off (web.optional)", where)
            return
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True).start()
        log.info("status page on %s", self.url)

    def stop(self) -> None:
        self.stopping.set()              # open /stream responses end
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def jpeg(self, view: LiveView) -> bytes:
        with self._jpeg_lock:
            if self._jpeg[0] != view.seq:
                ok, data = cv2.imencode(".jpg", view.render(), [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
                self._jpeg = (view.seq, data.tobytes())
            return self._jpeg[1]


def _handler(server: StatusServer):
    live = server.live

    class Handler(BaseHTTPRequestHandler):
        server_version = "edge"
        sys_version = ""

        def log_message(self, format, *args):      # requests are not worth a log line each
            log.debug("web: %s %s", self.address_string(), format % args)

        def do_GET(self):
            route = {"/": self.page, "/healthz": self.healthz, "/metrics": self.metrics,
                     "/snapshot.jpg": self.snapshot, "/stream": self.stream}.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            try:
                route()
            except (BrokenPipeError, ConnectionResetError):
                pass                     # the viewer went away

        def reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def healthz(self):
            health = live.health()
            self.reply(200 if health["status"] == "ok" else 503, "application/json",
                       json.dumps(health).encode())

        def metrics(self):
            self.reply(200, METRICS_CONTENT_TYPE, live.metrics.exposition())

        def snapshot(self):
            view = live.view.latest()
            if view is None:
                self.reply(503, "text/plain; charset=utf-8", b"no frame yet\n")
                return
            self.reply(200, "image/jpeg", server.jpeg(view))

        def stream(self):
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seq, next_at = 0, 0.0
            while not server.stopping.is_set():
                view = live.view.wait_newer(seq, timeout=1.0)
                if view is None:
                    continue
                seq = view.seq
                jpeg = server.jpeg(view)
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode() + jpeg + b"\r\n")
                # Rate cap per viewer: frames in between are skipped, not queued.
                next_at = max(next_at + 1.0 / server.cfg.stream_max_fps, time.monotonic())
                server.stopping.wait(max(0.0, next_at - time.monotonic()))

        def page(self):
            self.reply(200, "text/html; charset=utf-8", render_page(live).encode())

    return Handler


def _when(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):        # event timestamps are ISO 8601 in UTC
        value = datetime.fromisoformat(value).timestamp()
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def render_page(live: LiveOutputs) -> str:
    """The one HTML page; every value from events or the database is escaped (names are user input)."""
    e = html.escape
    health = live.health()
    rows = []
    for event in live.recent_events():
        identity = event.get("identity")
        gender = event.get("gender") or {}
        who = e(identity["name"]) if identity else ("unknown" if event.get("identity_decided") else "")
        rows.append(f"<tr><td>{e(_when(event.get('timestamp')))}</td><td>{e(event['type'])}</td><td>{who}</td>"
                    f"<td>{e(gender.get('label') or '')}</td>"
                    f"<td>{'' if event.get('age') is None else round(event['age'])}</td>"
                    f"<td>{e(str(event.get('dwell_s', '')))}</td></tr>")
    people = [f"<tr><td>{e(p['name'])}</td><td>{p['embeddings']}</td><td>{p['sightings']}</td>"
              f"<td>{e(_when(p.get('last_seen')))}</td></tr>" for p in live.people]
    age = health["last_frame_age_s"]
    state_class = "ok" if health["status"] == "ok" else "bad"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edge: {e(live.cfg.device)}</title>
<meta http-equiv="refresh" content="10">
<style>
body {{ font: 14px sans-serif; margin: 16px; background: #fafafa; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 8px; }} h2 {{ font-size: 16px; margin: 16px 0 6px; }}
.ok {{ color: #1a7f37; }} .bad {{ color: #c62828; }}
.cols {{ display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }}
table {{ border-collapse: collapse; background: white; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
th {{ background: #eee; }} img {{ max-width: 480px; border: 1px solid #ccc; }}
</style></head><body>
<h1>{e(live.cfg.device)} / {e(live.cfg.camera)}:
<span class="{state_class}">{e(health['status'])}</span></h1>
<div>camera {e(health['camera'])}, broker {e(health['broker'])}, {health['fps']:.1f} fps,
last frame {'never' if age is None else f'{age:.1f} s ago'}, outbox {health['outbox_depth']},
{health['frames']} frames since start.
Links: <a href="/stream">live stream</a>, <a href="/snapshot.jpg">snapshot</a>, <a href="/healthz">healthz</a>,
<a href="/metrics">metrics</a>.</div>
<div class="cols">
<div><h2>Live</h2><img id="live" src="/snapshot.jpg" alt="live picture">
<h2>Enrolled people</h2>
<table id="people"><tr><th>name</th><th>photos</th><th>sightings</th><th>last seen</th></tr>
{''.join(people) or '<tr><td colspan="4">no one is enrolled</td></tr>'}</table></div>
<div><h2>Recent events</h2>
<table id="events"><tr><th>time</th><th>event</th><th>who</th><th>gender</th><th>age</th><th>dwell s</th></tr>
{''.join(rows) or '<tr><td colspan="6">none yet</td></tr>'}</table></div>
</div>
<script>setInterval(() => {{ document.getElementById("live").src = "/snapshot.jpg?t=" + Date.now(); }}, 1000);</script>
</body></html>
"""
