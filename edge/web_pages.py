"""HTML of the login and people pages. Every value from the database, an upload or the client is escaped
(names are user input); every form carries the session's CSRF token."""

from __future__ import annotations

import html
from datetime import datetime

from .enroll import NAME_RULE

e = html.escape

STYLE = """
body { font: 14px sans-serif; margin: 16px; background: #fafafa; color: #222; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 18px 0 6px; }
table { border-collapse: collapse; background: white; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: middle; }
th { background: #eee; } .thumb { width: 64px; height: 64px; object-fit: cover; border: 1px solid #ccc; }
.flash { background: #fff; border: 1px solid #bbb; padding: 6px 10px; margin: 8px 0; max-width: 900px; }
.ok { color: #1a7f37; } .bad { color: #c62828; } .muted { color: #777; }
form.inline { display: inline; } input[type=text], input[type=password] { width: 14em; }
nav a { margin-right: 12px; }
"""


def when(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value).timestamp()
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _page(title: str, body: str, logged_in: bool, csrf: str = "", refresh_s: int | None = None) -> str:
    logout = (f'<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" '
              f'value="{e(csrf)}"><button id="logout">log out</button></form>') if logged_in else \
        '<a href="/login" id="login-link">log in</a>'
    return f"""<!doctype html>
<html><head><meta charset="utf-8">{f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ''}<title>{e(title)}</title><style>{STYLE}</style></head><body>
<nav><a href="/">status</a><a href="/people">people</a>{logout}</nav>
{body}
</body></html>
"""


def login_page(device: str, form_token: str, message: str = "", enabled: bool = True) -> str:
    if not enabled:
        body = ("<h1>Log in</h1><p>No password is set, so the page is read-only. Set <code>web.password</code> "
                "(or <code>web.password_file</code>, or <code>EDGE_WEB_PASSWORD</code>) to enrol, name and forget "
                "people here.</p>")
        return _page(f"edge: {device}: log in", body, False)
    error = f'<p class="bad" id="login-error">{e(message)}</p>' if message else ""
    body = f"""<h1>{e(device)}: log in</h1>{error}
<form method="post" action="/login" id="login-form">
<input type="hidden" name="csrf" value="{e(form_token)}">
<label>password <input type="password" name="password" id="password" autofocus></label>
<button type="submit" id="login-button">log in</button></form>
<p class="muted">Enrolling, naming and forgetting people needs this password (<code>web.password</code>).</p>"""
    return _page(f"edge: {device}: log in", body, False)


def _thumb(filename: str | None, alt: str) -> str:
    if not filename:
        return '<span class="muted">no picture</span>'
    return f'<img class="thumb" src="/thumbnails/{e(filename)}" alt="{e(alt)}">'


def _hidden(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(csrf)}">'


def people_page(device: str, people: list[dict], sightings: list[dict], groups: list[dict], *,
                logged_in: bool, csrf: str, flash: str, thumbnails_on: bool, max_upload_mb: float,
                camera: str = "camera", camera_requests: tuple[dict, ...] = (), default_frames: int = 5) -> str:
    act = logged_in
    rows = []
    for p in people:
        forget = (f'<form class="inline" method="post" action="/people/forget" '
                  f'onsubmit="return confirm(\'Forget {e(p["name"])}: every photo embedding, sighting and '
                  f'thumbnail?\')">{_hidden(csrf)}<input type="hidden" name="name" value="{e(p["name"])}">'
                  f'<button class="forget-person">forget</button></form>') if act else ""
        rows.append(f'<tr class="person" data-name="{e(p["name"])}"><td>{_thumb(p["thumbnail"], p["name"])}</td>'
                    f'<td class="name">{e(p["name"])}</td><td class="photos">{p["photos"]}</td>'
                    f'<td>{p["sightings"]}</td><td>{e(when(p["last_seen"]))}</td>'
                    f'<td>{e(", ".join(p["models"])) or "<span class=muted>not recorded</span>"}</td>'
                    f'<td>{forget}</td></tr>')
    group_rows = []
    for g in groups:
        track = g["tracks"][0] if g["tracks"] else ""
        ident = (f'{_hidden(csrf)}<input type="hidden" name="group" value="{g["cluster"]}">'
                 f'<input type="hidden" name="track" value="{e(track)}">')
        actions = (f'<form class="inline name-group" method="post" action="/unknowns/name">{ident}'
                   f'<input type="text" name="name" placeholder="name" required maxlength="100">'
                   f'<button>name</button></form> '
                   f'<form class="inline" method="post" action="/unknowns/forget">{ident}'
                   f'<button class="forget-group">forget</button></form>') if act else ""
        age = "" if g["age"] is None else f"{g['age']:.0f}"
        group_rows.append(f'<tr class="group" data-group="{g["cluster"]}"><td>{_thumb(g["thumbnail"], "unknown")}</td>'
                          f'<td>{g["cluster"]}</td><td>{g["count"]}</td><td>{g["frames"]}</td><td>{age}</td>'
                          f'<td>{e(g["gender"] or "")}</td><td>{e(when(g["last_seen"]))}</td><td>{actions}</td></tr>')
    sighting_rows = [f'<tr><td>{e(when(s["last_seen"]))}</td><td>{e(s["name"] or "unknown")}</td>'
                     f'<td>{e(s["camera"] or "")}</td><td>{"" if s["age"] is None else round(s["age"])}</td>'
                     f'<td>{e(s["gender"] or "")}</td></tr>' for s in sightings]
    enrol = f"""<h2>Enrol a person</h2>
<form method="post" action="/people/enroll" enctype="multipart/form-data" id="enroll-form">{_hidden(csrf)}
<label>name <input type="text" name="name" id="enroll-name" required maxlength="100" title="{e(NAME_RULE)}"></label>
<label>photos <input type="file" name="photos" id="enroll-photos" multiple accept="image/*" required></label>
<label><input type="checkbox" name="strict" value="1"> save nothing if any photo is unusable</label>
<button type="submit" id="enroll-button">enrol</button></form>
<p class="muted">One face per photo; at most {max_upload_mb:g} MiB per upload. A bad photo is reported and skipped;
a photo already enrolled is not stored twice.</p>""" if act else \
        '<p class="muted">Log in to enrol, name or forget people.</p>'
    request_rows = [f'<tr class="camera-request status-{e(r["status"])}" data-id="{r["id"]}"><td>{e(r["name"])}</td>'
                    f'<td>{e(r["camera"])}</td><td class="status">{e(r["status"])}</td>'
                    f'<td class="good">{r["good"]}/{r["frames"]}</td><td class="message">{e(r["message"])}</td>'
                    f'<td>{e(when(r["requested_at"]))}</td></tr>' for r in camera_requests]
    waiting = any(r["status"] in ("requested", "running") for r in camera_requests)
    from_camera = (f"""<h2>Enrol from the camera</h2>
<form method="post" action="/people/enroll-camera" id="camera-enroll-form">{_hidden(csrf)}
<label>name <input type="text" name="name" id="camera-enroll-name" required maxlength="100" title="{e(NAME_RULE)}"></label>
<label>good frames <input type="number" name="frames" id="camera-enroll-frames" min="1" max="50" value="{default_frames}"></label>
<button type="submit" id="camera-enroll-button">enrol from camera {e(camera)}</button></form>
<p class="muted">The person stands alone in front of the camera, facing it; progress shows on the kiosk screen
and here. Two faces in view, or none, refuse it.</p>""" if act else "") + (
        f"""<table id="camera-enrolments"><tr><th>name</th><th>camera</th><th>status</th><th>frames</th><th></th>
<th>asked</th></tr>{''.join(request_rows)}</table>""" if request_rows else "")
    no_thumbs = "" if thumbnails_on else \
        ('<p class="muted">Face thumbnails are off (<code>snapshots.keep_thumbnails</code>): groups show no '
         'picture.</p>')
    body = f"""<h1>{e(device)}: people</h1>
{f'<div class="flash" id="flash">{flash}</div>' if flash else ''}
{enrol}
{from_camera}
<h2>Enrolled people</h2>
<table id="people"><tr><th></th><th>name</th><th>photos</th><th>sightings</th><th>last seen</th><th>model</th><th></th></tr>
{''.join(rows) or '<tr><td colspan="7">no one is enrolled</td></tr>'}</table>
<h2>Unknown faces, grouped</h2>{no_thumbs}
<table id="groups"><tr><th></th><th>group</th><th>tracks</th><th>frames</th><th>age</th><th>gender</th><th>last seen</th><th></th></tr>
{''.join(group_rows) or '<tr><td colspan="8">no unknown faces kept</td></tr>'}</table>
<h2>Recent sightings</h2>
<table id="sightings"><tr><th>last seen</th><th>who</th><th>camera</th><th>age</th><th>gender</th></tr>
{''.join(sighting_rows) or '<tr><td colspan="5">none yet</td></tr>'}</table>"""
    # While a camera enrolment runs the page reloads itself to show its progress (no script needed).
    return _page(f"edge: {device}: people", body, logged_in, csrf, refresh_s=2 if waiting else None)


def enrolment_flash(result) -> str:
    """An enrolment's summary and one line per photo, escaped."""
    css = "ok" if result.stored else "bad"
    lines = "".join(f'<li class="photo-{e(p.status)}">{e(p.message)}</li>' for p in result.photos)
    return f'<p class="{css}" id="enroll-summary">{e(result.summary())}</p><ul id="photo-results">{lines}</ul>'


def message_flash(text: str, ok: bool = True) -> str:
    return f'<p class="{"ok" if ok else "bad"}">{e(text)}</p>'


def error_page(status: int, message: str) -> str:
    return _page(f"edge: {status}", f'<h1>{status}</h1><p class="bad" id="error">{e(message)}</p>'
                 '<p><a href="/people">back to the people page</a></p>', False)
