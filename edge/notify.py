"""systemd notify protocol (sd_notify): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

A datagram to $NOTIFY_SOCKET; a no-op when not started by systemd (Type=notify).
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address = None
        if address:
            # A leading "@" names a socket in the abstract namespace.
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto("\n".join(fields).encode(), self.address)
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
