"""Local status page over HTTP: `/` (recent events, enrolled people, live picture), `/people` (enrol, name,
forget; edge/web_pages.py), a JSON API under `/api/` (edge/web_people.py does the work), `/healthz` (JSON),
`/metrics` (Prometheus text), `/snapshot.jpg` and `/stream` (MJPEG) with the overlay. Off by default; bound to
127.0.0.1 unless configured. Served by a fixed worker pool with request deadlines (edge/web_server.py); actions
need a login (edge/web_auth.py).
"""

from __future__ import annotations

import html
import json
import logging
import secrets
import threading
import time
from datetime import datetime
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote, urlsplit

import cv2

from .config import ConfigError, WebConfig, is_loopback
from .enroll import BadName
from .images import ImageError
from .live import LiveOutputs, LiveView
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .store import StoreError
from .web_auth import Auth, same
from .web_pages import enrolment_flash, error_page, login_page, message_flash, people_page
from .web_people import People
from .web_server import BadRequest, PooledHTTPServer, QuietHandler, host_allowed, parse_form, parse_multipart, \
    reject_log

log = logging.getLogger(__name__)

BOUNDARY = "edgeframe"
WRITE_TIMEOUT_S = 30.0        # a reader that stops reading frees its worker after this long
SESSION_COOKIE, LOGIN_COOKIE = "edge_session", "edge_login"
HTML = "text/html; charset=utf-8"

class StatusServer:
    def __init__(self, live: LiveOutputs, cfg: WebConfig):
        self.live = live
        self.cfg = cfg
        self.httpd: PooledHTTPServer | None = None
        self.stopping = threading.Event()
        # Each frame is drawn and encoded once, whatever the number of viewers.
        self._jpeg_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self.auth = Auth.from_config(cfg)
        self.people = People(live.cfg)
        self.open_reads = is_loopback(cfg.host)      # read-only pages need no login on loopback only
        self.allowed_hosts = {h.lower() for h in cfg.allowed_hosts} | {"localhost"}
        self.streams = threading.BoundedSemaphore(cfg.max_streams) if cfg.max_streams else None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2] if self.httpd else (self.cfg.host, self.cfg.port)
        return f"http://{host}:{port}/"

    def start(self) -> None:
        try:
            self.httpd = PooledHTTPServer((self.cfg.host, self.cfg.port), _handler(self), self.cfg.workers,
                                          self.cfg.queue)
        except OSError as exc:
            where = f"cannot listen on {self.cfg.host}:{self.cfg.port}: {exc.strerror or exc}"
            if not self.cfg.optional:   # a page the user asked for and cannot open must not fail silently
                raise ConfigError(f"config error: web.port: status page {where} (another program holds it? "
                                  "choose another web.port, or set web.optional: true to run without the page)")
            # web.optional: the pipeline matters more than its status page: say why once and carry on.
            log.error("status page: %s; web page off (web.optional)", where)
            return
        threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True).start()
        log.info("status page on %s (%d workers%s)", self.url, self.cfg.workers,
                 ", login required" if not self.open_reads else
                 "" if self.auth.enabled else ", read-only: no web.password")

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
    live, cfg, auth, people = server.live, server.cfg, server.auth, server.people
    device = live.cfg.device

    class Handler(QuietHandler):
        header_timeout_s = cfg.header_timeout_s

        def do_GET(self):
            self.dispatch("GET")

        def do_POST(self):
            self.dispatch("POST")

        def do_DELETE(self):
            self.dispatch("DELETE")

        def dispatch(self, method: str) -> None:
            self.connection.settimeout(WRITE_TIMEOUT_S)
            path = urlsplit(self.path).path
            try:
                if not host_allowed(self.headers.get("Host"), server.allowed_hosts,
                                    self.connection.getsockname()[0]):
                    reject_log("host", "request from %s with Host %r refused (add it to web.allowed_hosts)",
                               self.client_address[0], (self.headers.get("Host") or "")[:100])
                    raise BadRequest(421, "this server does not answer to that host name")
                route = self.route(method, path)
                if route is None:
                    raise BadRequest(404 if method == "GET" else 405, "no such page")
                route()
            except BadRequest as exc:
                self.fail(exc.status, str(exc))
            except _Handled:
                pass
            except (BrokenPipeError, ConnectionResetError):
                pass                     # the viewer went away
            except StoreError as exc:
                log.error("status page: %s", exc)
                self.fail(503, f"database: {exc}")
            except TimeoutError:
                raise                    # BaseHTTPRequestHandler logs it and closes the connection
            except Exception:  # noqa: BLE001 - a bug in one page must not cost the client its answer
                log.exception("status page: %s %s failed", method, path)
                self.close_connection = True
                self.fail(500, "internal error (see the daemon's log)")

        def route(self, method: str, path: str):
            if method == "GET":
                if path.startswith("/thumbnails/"):
                    return self.thumbnail
                return {"/": self.page, "/healthz": self.healthz, "/metrics": self.metrics,
                        "/snapshot.jpg": self.snapshot, "/stream": self.stream, "/login": self.login_form,
                        "/people": self.people_page, "/api/people": self.api_people,
                        "/api/enrolments": self.api_camera_enrolments}.get(path) or (
                    self.api_camera_enrolment if path.startswith("/api/enrolments/") else None)
            if method == "POST":
                return {"/login": self.login, "/logout": self.logout, "/people/enroll": self.enroll,
                        "/people/forget": self.forget, "/unknowns/name": self.name_group,
                        "/unknowns/forget": self.forget_group, "/api/people": self.api_enroll,
                        "/api/recognize": self.api_recognize, "/people/enroll-camera": self.enroll_camera,
                        "/api/enrolments": self.api_enroll_camera}.get(path)
            if method == "DELETE" and path.startswith("/api/people/"):
                return self.api_forget
            return None

        # --- replies ----------------------------------------------------------------------------
        def reply(self, code: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "same-origin")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def fail(self, code: int, message: str, headers: dict | None = None) -> None:
            if self.path.startswith("/api/"):
                self.reply(code, "application/json", json.dumps({"error": message}).encode(), headers)
            else:
                self.reply(code, HTML, error_page(code, message).encode(), headers)

        def redirect(self, where: str, headers: dict | None = None) -> None:
            self.reply(303, "text/plain; charset=utf-8", b"", {"Location": where, **(headers or {})})

        # --- who is asking ---------------------------------------------------------------------
        def cookie(self, name: str) -> str | None:
            try:
                jar = SimpleCookie(self.headers.get("Cookie") or "")
            except CookieError:
                return None
            return jar[name].value if name in jar else None

        def session(self):
            return auth.session(self.cookie(SESSION_COOKIE))

        def may_view(self) -> bool:
            if server.open_reads or self.session() is not None:
                return True
            if self.path.startswith("/snapshot") or self.path.startswith("/thumbnails") or \
                    self.path.startswith("/stream"):
                self.fail(401, "log in first")
            else:
                self.redirect("/login")
            return False

        def acting_session(self, fields: dict):
            """The session of a logged-in person whose form carries its CSRF token; else BadRequest."""
            session = self.session()
            if session is None:
                raise BadRequest(401, "log in first (your session may have expired)")
            if not same(fields.get("csrf"), session.csrf):
                reject_log("csrf", "form from %s without a valid CSRF token refused", self.client_address[0])
                raise BadRequest(403, "missing or wrong CSRF token: reload the page and try again")
            return session

        def api_login(self) -> None:
            client = self.client_address[0]
            wait = auth.retry_after(client)
            if wait:
                raise BadRequest(429, f"too many failed attempts; try again in {wait} s")
            if not (auth.enabled or auth.token_hash):
                raise BadRequest(403, "the API is off: set web.token or web.password")
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not auth.check_token(client, token.strip()):
                reject_log("token", "API request from %s without a valid token", client)
                raise BadRequest(401, "missing or wrong token (Authorization: Bearer TOKEN)")

        # --- request bodies --------------------------------------------------------------------
        def body(self) -> bytes:
            length_text = self.headers.get("Content-Length")
            if length_text is None:
                raise BadRequest(411, "Content-Length required")
            try:
                length = int(length_text)
            except ValueError:
                raise BadRequest(400, "bad Content-Length") from None
            if length < 0:
                raise BadRequest(400, "bad Content-Length")
            if length > cfg.max_upload_bytes:
                reject_log("size", "upload of %d bytes from %s refused (web.max_upload_bytes %d)", length,
                           self.client_address[0], cfg.max_upload_bytes)
                self.fail(413, f"upload too large: {length / 1e6:.1f} MB, the limit is "
                               f"{cfg.max_upload_bytes / 1e6:.1f} MB (web.max_upload_bytes)")
                self.drain(length)
                raise _Handled()
            self.reader.deadline = time.monotonic() + cfg.body_timeout_s
            data = self.rfile.read(length)
            if len(data) != length:
                raise BadRequest(400, "request body ended early")
            return data

        def drain(self, length: int) -> None:
            """Read (and drop) a refused upload for a few seconds, so the browser gets to see the 413."""
            self.close_connection = True
            self.reader.deadline = time.monotonic() + 5.0
            left = min(length, 4 * cfg.max_upload_bytes)
            try:
                while left > 0 and (chunk := self.rfile.read1(min(left, 65536))):
                    left -= len(chunk)
            except (TimeoutError, OSError):
                pass                      # the client is cut off: the reply was already sent

        def form(self) -> tuple[dict, list]:
            content_type = self.headers.get("Content-Type") or ""
            body = self.body()
            if content_type.startswith("multipart/form-data"):
                return parse_multipart(content_type, body, cfg.max_upload_files)
            return parse_form(body), []

        # --- open pages ------------------------------------------------------------------------
        def healthz(self):
            health = live.health()
            self.reply(200 if health["status"] == "ok" else 503, "application/json",
                       json.dumps(health).encode())

        def metrics(self):
            self.reply(200, METRICS_CONTENT_TYPE, live.metrics.exposition())

        # --- read-only pages: open on loopback, after login elsewhere --------------------------
        def snapshot(self):
            if not self.may_view():
                return
            view = live.view.latest()
            if view is None:
                self.reply(503, "text/plain; charset=utf-8", b"no frame yet\n")
                return
            self.reply(200, "image/jpeg", server.jpeg(view))

        def stream(self):
            if not self.may_view():
                return
            if server.streams is None or not server.streams.acquire(blocking=False):
                raise BadRequest(503, f"at most {cfg.max_streams} live streams at once (web.max_streams)")
            try:
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
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                     "\r\n\r\n".encode() + jpeg + b"\r\n")
                    # Rate cap per viewer: frames in between are skipped, not queued.
                    next_at = max(next_at + 1.0 / cfg.stream_max_fps, time.monotonic())
                    server.stopping.wait(max(0.0, next_at - time.monotonic()))
            finally:
                server.streams.release()

        def page(self):
            if self.may_view():
                self.reply(200, HTML, render_page(live).encode())

        def people_page(self):
            if not self.may_view():
                return
            session = self.session()
            flash = ""
            if session is not None:
                flash, session.flash = session.flash, ""
            body = people_page(device, people.people(), people.sightings(), people.groups(),
                               logged_in=session is not None, csrf=session.csrf if session else "", flash=flash,
                               thumbnails_on=live.cfg.snapshots.keep_thumbnails,
                               max_upload_mb=round(cfg.max_upload_bytes / 2 ** 20, 1), camera=live.cfg.camera,
                               camera_requests=tuple(people.camera_enrolments()),
                               default_frames=live.cfg.camera_enrolment.frames)
            self.reply(200, HTML, body.encode())

        def thumbnail(self):
            if not self.may_view():
                return
            path = people.thumbnail(unquote(self.path.split("/thumbnails/", 1)[1].split("?")[0]))
            if path is None:
                raise BadRequest(404, "no such thumbnail (or snapshots.keep_thumbnails is off)")
            self.reply(200, "image/jpeg", path.read_bytes())

        # --- login -----------------------------------------------------------------------------
        def login_form(self, message: str = "", code: int = 200, headers: dict | None = None):
            token = self.cookie(LOGIN_COOKIE)
            cookie = {}
            if not token or len(token) > 100:
                token = secrets.token_urlsafe(24)
                cookie = {"Set-Cookie": f"{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"}
            self.reply(code, HTML, login_page(device, token, message, auth.enabled).encode(),
                       {**cookie, **(headers or {})})

        def login(self):
            client = self.client_address[0]
            wait = auth.retry_after(client)
            if wait:
                reject_log("login-limit", "login attempts from %s refused for %d s", client, wait)
                self.login_form(f"too many failed logins; try again in {wait} s", 429, {"Retry-After": str(wait)})
                return
            fields, _ = self.form()
            if not auth.enabled:
                raise BadRequest(403, "no web.password is set: the page is read-only")
            if not same(fields.get("csrf"), self.cookie(LOGIN_COOKIE)):
                raise BadRequest(403, "missing or wrong CSRF token: reload the login page and try again")
            if not auth.check_password(client, fields.get("password", "")):
                reject_log("login", "failed login from %s", client)
                self.login_form("wrong password", 401)
                return
            sid = auth.open_session()
            self.redirect("/people", {"Set-Cookie": f"{SESSION_COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; "
                                                    f"Max-Age={int(auth.session_s)}"})

        def logout(self):
            fields, _ = self.form()
            self.acting_session(fields)
            auth.close_session(self.cookie(SESSION_COOKIE))
            self.redirect("/login", {"Set-Cookie": f"{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; "
                                                   "Max-Age=0"})

        # --- actions (page) ----------------------------------------------------------------------
        def enroll(self):
            fields, files = self.form()
            session = self.acting_session(fields)
            photos = [(filename, data) for field, filename, data in files if field == "photos"]
            try:
                if not photos:
                    raise BadRequest(400, "choose at least one photo")
                session.flash = enrolment_flash(people.enroll(fields.get("name", ""), photos,
                                                              strict=bool(fields.get("strict"))))
            except BadName as exc:
                session.flash = message_flash(str(exc), ok=False)
            except BadRequest as exc:
                session.flash = message_flash(str(exc), ok=False)
            self.redirect("/people")

        def enroll_camera(self):
            fields, _ = self.form()
            session = self.acting_session(fields)
            try:
                request = people.request_camera_enrolment(fields.get("name", ""), fields.get("frames"))
                session.flash = message_flash(f"asked camera {request['camera']} to enrol {request['name']} from "
                                              f"{request['frames']} good frames: one person, facing the camera")
            except (BadName, LookupError) as exc:
                session.flash = message_flash(str(exc).strip("'\""), ok=False)
            self.redirect("/people")

        def forget(self):
            fields, _ = self.form()
            session = self.acting_session(fields)
            name = fields.get("name", "")
            done = people.forget(name)
            session.flash = message_flash(f"forgot {name}: embeddings, sightings, queued events and thumbnails "
                                          "erased" if done else f"no enrolled person named {name!r}", ok=done)
            self.redirect("/people")

        def name_group(self):
            fields, _ = self.form()
            session = self.acting_session(fields)
            try:
                session.flash = message_flash(people.name_group(_group_number(fields), fields.get("track"),
                                                                fields.get("name", "")))
            except (BadName, LookupError) as exc:
                session.flash = message_flash(str(exc).strip("'\""), ok=False)
            self.redirect("/people")

        def forget_group(self):
            fields, _ = self.form()
            session = self.acting_session(fields)
            try:
                session.flash = message_flash(people.forget_group(_group_number(fields), fields.get("track")))
            except LookupError as exc:
                session.flash = message_flash(str(exc).strip("'\""), ok=False)
            self.redirect("/people")

        # --- JSON API (Authorization: Bearer TOKEN; no cookies, so no CSRF) ------------------------
        def api_reply(self, code: int, obj) -> None:
            self.reply(code, "application/json", json.dumps(obj).encode())

        def api_people(self):
            self.api_login()
            self.api_reply(200, {"people": people.people()})

        def api_enroll(self):
            self.api_login()
            fields, files = self.form()
            photos = [(filename, data) for _, filename, data in files]
            if not photos:
                raise BadRequest(400, "no photo: send multipart/form-data with name=NAME and photo=@FILE")
            try:
                result = people.enroll(fields.get("name", ""), photos,
                                       strict=fields.get("strict", "") in ("1", "true", "yes"))
            except BadName as exc:
                raise BadRequest(400, str(exc)) from None
            self.api_reply(201 if result.stored else 200 if not result.bad else 422, result.as_dict())

        def api_forget(self):
            self.api_login()
            name = unquote(urlsplit(self.path).path[len("/api/people/"):])
            if not people.forget(name):
                raise BadRequest(404, f"no enrolled person named {name!r}")
            self.api_reply(200, {"forgot": name})

        def api_enroll_camera(self):
            self.api_login()
            fields, _ = self.form()
            try:
                request = people.request_camera_enrolment(fields.get("name", ""), fields.get("frames"))
            except BadName as exc:
                raise BadRequest(400, str(exc)) from None
            except LookupError as exc:
                raise BadRequest(429, str(exc).strip("'\"")) from None
            self.api_reply(202, {**request, "url": f"/api/enrolments/{request['id']}"})

        def api_camera_enrolments(self):
            self.api_login()
            self.api_reply(200, {"enrolments": people.camera_enrolments(20)})

        def api_camera_enrolment(self):
            self.api_login()
            number = urlsplit(self.path).path[len("/api/enrolments/"):]
            request = people.camera_enrolment(int(number)) if number.isascii() and number.isdigit() \
                and len(number) <= 18 else None
            if request is None:
                raise BadRequest(404, "no such enrolment request")
            self.api_reply(200, request)

        def api_recognize(self):
            self.api_login()
            _, files = self.form()
            if len(files) != 1:
                raise BadRequest(400, "send exactly one image: multipart/form-data with image=@FILE")
            _, filename, data = files[0]
            try:
                self.api_reply(200, people.recognize(filename, data))
            except ImageError as exc:
                raise BadRequest(413 if exc.kind == "too_large" else 422, str(exc)) from None

    return Handler


class _Handled(Exception):
    """The reply was already sent (e.g. 413 before reading the body); the route stops here."""


def _group_number(fields: dict) -> int:
    try:
        return int(fields.get("group", ""))
    except ValueError:
        raise LookupError("no such unknown group") from None


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
Links: <a href="/people">people</a>, <a href="/stream">live stream</a>, <a href="/snapshot.jpg">snapshot</a>, <a href="/healthz">healthz</a>,
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
