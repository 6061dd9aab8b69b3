"""systemd notify protocol (sd_notify): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

A datagram to $NOTIFY_SOCKET; a no-op when not started by systemd (Type=notify).
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address = None
        if address:
            # A leading "@" names a socket in the abstract namespace.
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        # systemd sets WATCHDOG_PID; a child that inherited the variables must not ping for its parent.
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        if watchdog_pid and watchdog_pid != str(os.getpid()):
            self.watchdog_usec = 0
        # Ping at a quarter of WatchdogSec= (sd_watchdog_enabled(3) asks for at least half) so one slow
        # frame never costs a restart; without WatchdogSec= once a second is plenty and costs nothing.
        self.watchdog_interval_s = self.watchdog_usec / 4e6 if self.watchdog_usec else 1.0
        self._last_watchdog = float("-inf")
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError:
            return False   # systemd gone (shutdown) or not listening: nothing useful to do about it
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """Rate-limited keep-alive; call it whenever the daemon has proven it is making progress."""
        now = time.monotonic()
        if now - self._last_watchdog < self.watchdog_interval_s:
            return False
        self._last_watchdog = now
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
