#!/usr/bin/env python3
"""Slow clients against the status page's HTTP server, before and after: 100 clients that send a request line
and then one header byte every 0.5 s for 8 s, against the standard library's ThreadingHTTPServer (used until
the people page) and against edge/web_server.PooledHTTPServer (4 workers, queue 4, 2 s header deadline).
Prints the thread count before and at most during the attack, and how many slow clients were cut off.

    python -m benchmarks.bench_web_slow_clients

Only loopback addresses; the attack stops by itself after 8 s.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edge.web_server import PooledHTTPServer, QuietHandler

CLIENTS, ATTACK_S = 100, 8.0


class Before(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class After(QuietHandler):
    header_timeout_s = 2.0

    def do_GET(self):
        self.send_response(200)
        self.end_headers()


def attack(server) -> tuple[int, int, int]:
    """(threads before, most threads during, slow clients the server disconnected)."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = threading.active_count()
    clients = []
    for _ in range(CLIENTS):
        client = socket.create_connection(("127.0.0.1", server.server_address[1]))
        client.sendall(b"GET / HTTP/1.1\r\n")
        client.setblocking(False)
        clients.append(client)
    most, cut, started = before, set(), time.monotonic()
    while time.monotonic() - started < ATTACK_S:
        for i, client in enumerate(clients):
            if i in cut:
                continue
            try:
                client.send(b"X")                    # one header byte, never the blank line that ends them
                if client.recv(100) == b"":
                    cut.add(i)
            except BlockingIOError:
                pass
            except OSError:
                cut.add(i)
        most = max(most, threading.active_count())
        time.sleep(0.5)
    for client in clients:
        client.close()
    server.shutdown()
    server.server_close()
    return before, most, len(cut)


if __name__ == "__main__":
    for label, server in (("ThreadingHTTPServer", lambda: ThreadingHTTPServer(("127.0.0.1", 0), Before)),
                          ("PooledHTTPServer (4 workers, queue 4, 2 s header deadline)",
                           lambda: PooledHTTPServer(("127.0.0.1", 0), After, 4, 4))):
        before, most, cut = attack(server())
        print(f"{label}: threads {before} -> at most {most} during the attack; "
              f"{cut} of {CLIENTS} slow clients cut off within {ATTACK_S:.0f} s")
