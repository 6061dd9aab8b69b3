"""Input from the network (MQTT payloads): JSON parsing that cannot crash or recurse without bound,
and a rejection log that writes one line per rejected message without letting a flood fill the journal.
"""

from __future__ import annotations

import json
import logging
import time

MAX_BRACKETS = 256        # far above any message of ours (a fleet message has 2), far below Python's recursion limit
MAX_INT_DIGITS = 20       # a millisecond timestamp has 13; Python refuses int("9" * 4301) with ValueError


class BadInput(ValueError):
    """A payload that is not accepted; str() says why in a few words."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadInput(f"an integer of {len(text)} digits")
    return int(text)


def _no_constant(text: str):
    raise BadInput(f"{text} is not JSON")


def parse_json(payload: bytes, max_bytes: int):
    """Parse one JSON document of at most `max_bytes`; BadInput for anything else.

    Nesting is bounded before parsing: a document cannot be deeper than its number of `[` and `{`
    (counted in C by bytes.count, strings included), so a payload with more than MAX_BRACKETS is refused
    unread and json.loads never gets near the recursion limit (5000 `[` used to raise RecursionError)."""
    if len(payload) > max_bytes:
        raise BadInput(f"{len(payload)} bytes, more than {max_bytes}")
    if payload.count(b"[") + payload.count(b"{") > MAX_BRACKETS:
        raise BadInput(f"more than {MAX_BRACKETS} brackets (nested too deep for a message of ours)")
    try:
        return json.loads(payload, parse_int=_bounded_int, parse_constant=_no_constant)
    except BadInput:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):      # JSONDecodeError is a ValueError
        raise BadInput("not JSON") from None


class RejectionLog:
    """One warning per rejected message, at most `burst` lines per `window_s`; the lines held back are
    counted and reported with the next line written. Repeats of the same (key, reason) within the window
    are not written again."""

    def __init__(self, logger: logging.Logger, what: str, burst: int = 20, window_s: float = 60.0):
        self.logger, self.what, self.burst, self.window_s = logger, what, burst, window_s
        self.rejected = 0                    # every rejection since start (metrics, tests)
        self._window_start = float("-inf")
        self._written = 0
        self._held_back = 0
        self._recent: set[tuple[str, str]] = set()

    def reject(self, key: str, reason: str) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._window_start, self._written = now, 0
            self._recent.clear()
        if (key, reason) in self._recent or self._written >= self.burst:
            self._held_back += 1
            return
        self._recent.add((key, reason))
        self._written += 1
        more = f" ({self._held_back} more rejected messages not logged)" if self._held_back else ""
        self._held_back = 0
        self.logger.warning("%s: ignored the message on %.120s: %.200s%s", self.what, key,
                            " ".join(reason.splitlines()), more)
