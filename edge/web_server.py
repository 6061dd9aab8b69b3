"""The HTTP server under the status page: a fixed pool of worker threads fed by a bounded queue of accepted
connections (more are closed at once), a deadline for a whole request (a client sending one byte every few
seconds is cut off), form and multipart parsing with bounded sizes, and the Host header check."""

from __future__ import annotations

import io
import logging
import queue
import socket
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class RateLimitedLog:
    """One log line per kind of rejection per minute, with the count of the ones not logged."""

    def __init__(self):
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, message: str, *args) -> None:
        with self._lock:
            last, suppressed = self._last.get(kind, (float("-inf"), 0))
            now = time.monotonic()
            if now - last < LOG_EVERY_S:
                self._last[kind] = (last, suppressed + 1)
                return
            self._last[kind] = (now, 0)
        log.warning("status page: " + message + (f" ({suppressed} more since the last such line)"
                                                 if suppressed else ""), *args)


reject_log = RateLimitedLog()


class PooledHTTPServer(HTTPServer):
    """HTTPServer whose requests run on `workers` fixed threads; at most `backlog` accepted connections wait."""

    def __init__(self, address, handler, workers: int, backlog: int):
        self.jobs: queue.Queue = queue.Queue(maxsize=max(1, backlog))
        self.rejected = 0
        self.workers: list[threading.Thread] = []       # none yet: a failed bind calls server_close()
        super().__init__(address, handler)
        self.workers = [threading.Thread(target=self._work, name=f"web-{i}", daemon=True) for i in range(workers)]
        for worker in self.workers:
            worker.start()

    def process_request(self, request, client_address):
        try:
            self.jobs.put_nowait((request, client_address))
        except queue.Full:
            self.rejected += 1
            reject_log("busy", "every worker busy and %d connections waiting: closed one from %s",
                       self.jobs.maxsize, client_address[0])
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            request, client_address = job
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one broken request must not end the worker
                log.exception("status page: request from %s failed", client_address[0])
            finally:
                self.shutdown_request(request)

    def handle_error(self, request, client_address):
        log.exception("status page: request from %s failed", client_address[0])

    def server_close(self):
        super().server_close()
        for _ in self.workers:
            self.jobs.put(None)           # blocks only while the queue is full of connections still to close
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self.shutdown_request(job[0])


class DeadlineReader(io.RawIOBase):
    """The socket's reading side with a deadline for everything read until it is moved: each recv waits only
    for the time left, so a slow trickle cannot stretch a request beyond it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.deadline = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class BadRequest(ValueError):
    """The request cannot be served; `status` is the HTTP code, str() the reason shown to the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_form(body: bytes, max_fields: int = 20) -> dict[str, str]:
    """application/x-www-form-urlencoded -> first value per field."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "form is not valid UTF-8 url-encoded text, or has too many fields") from None
    return {key: values[0] for key, values in fields.items()}


def parse_multipart(content_type: str, body: bytes, max_files: int) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    """multipart/form-data -> (text fields, [(field, file name, bytes)]), at most max_files files."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    if not message.is_multipart():
        raise BadRequest(400, "expected multipart/form-data with a boundary")
    fields, files = {}, []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            if not filename and not data:
                continue                        # a file input left empty
            if len(files) >= max_files:
                raise BadRequest(413, f"more than {max_files} files in one upload")
            files.append((name, safe_filename(filename), data))
        elif len(fields) < 20:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def safe_filename(name: str) -> str:
    """An upload's name as shown back: no folders, printable, short."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:80]
    return base or "upload"


def host_allowed(host_header: str | None, allowed: set[str], local_address: str) -> bool:
    """The Host header names this server: a configured name or the address the client connected to
    (a DNS-rebinding page carries its own domain name here)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return host in allowed or host == local_address.lower()


class QuietHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler with the deadline reader and one debug line per request."""
    server_version = "edge"
    sys_version = ""
    header_timeout_s = 10.0

    def setup(self):
        super().setup()
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self):
        self.reader.deadline = time.monotonic() + self.header_timeout_s
        super().handle_one_request()

    def log_message(self, format, *args):      # requests are not worth a log line each
        log.debug("web: %s %s", self.address_string(), format % args)

    def log_error(self, format, *args):
        if "timed out" in format % args:
            reject_log("timeout", "a client from %s sent no complete request in %.0f s: closed",
                       self.address_string(), self.header_timeout_s)
        else:
            log.debug("web: %s %s", self.address_string(), format % args)
