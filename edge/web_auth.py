"""Who may act on the people page and the JSON API: salted scrypt hashes of the password and token (the
plain secret is never kept), sessions with a CSRF token each, and a limit on failed logins per client."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

# scrypt at n=2**14, r=8: 16 MB and ~50 ms per check on x86 (a few hundred on a Pi): cheap for a person,
# costly for a guesser, on top of the per-client limit below.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
MAX_SESSIONS = 64
LOGIN_WINDOW_S = 60.0
MAX_TRACKED_CLIENTS = 4096
TOKEN_CACHE_S = 300.0       # a script polling the API pays the scrypt check once per 5 minutes, not per call


def hash_secret(secret: str, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R,
                p: int = SCRYPT_P) -> str:
    """"scrypt$n$r$p$salt_hex$hash_hex", the form `edge hash-password` prints and web.password accepts."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        return n, r, p, bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return None


def as_hash(secret: str | None) -> str | None:
    """A configured secret as a hash: kept as is when it already is one, hashed now when it is plain."""
    if not secret:
        return None
    return secret if _parse(secret) else hash_secret(secret)


def verify(candidate: str, stored: str | None) -> bool:
    parsed = _parse(stored) if stored else None
    if parsed is None or not candidate or len(candidate) > 1024:
        return False
    n, r, p, salt, digest = parsed
    try:
        computed = hashlib.scrypt(candidate.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024,
                                  dklen=len(digest))
    except (ValueError, MemoryError):      # a hash written with absurd parameters
        return False
    return hmac.compare_digest(computed, digest)


@dataclass
class Session:
    csrf: str
    expires: float
    flash: str = ""                      # HTML of the last action's result, shown once after the redirect


@dataclass
class Auth:
    password_hash: str | None
    token_hash: str | None
    session_s: float
    failures_per_minute: int
    sessions: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, deque] = field(default_factory=dict)
    _good_tokens: dict[bytes, float] = field(default_factory=dict)     # keyed HMAC of a token -> valid until
    _cache_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, web) -> "Auth":
        return cls(as_hash(web.resolved_password()), as_hash(web.resolved_token()), web.session_hours * 3600,
                   web.login_failures_per_minute)

    @property
    def enabled(self) -> bool:
        return self.password_hash is not None

    # --- failed attempts ------------------------------------------------------------------------
    def retry_after(self, client: str) -> int:
        """Seconds until `client` may try again (0: now)."""
        with self._lock:
            failures = self._failures.get(client)
            if not failures:
                return 0
            while failures and failures[0] < time.monotonic() - LOGIN_WINDOW_S:
                failures.popleft()
            if len(failures) < self.failures_per_minute:
                return 0
            return max(1, int(failures[0] + LOGIN_WINDOW_S - time.monotonic()) + 1)

    def _failed(self, client: str) -> None:
        with self._lock:
            if client not in self._failures and len(self._failures) >= MAX_TRACKED_CLIENTS:
                # Forget the client whose last failure is oldest: the table stays bounded under a spray.
                oldest = min(self._failures, key=lambda c: self._failures[c][-1] if self._failures[c] else 0)
                del self._failures[oldest]
            self._failures.setdefault(client, deque(maxlen=self.failures_per_minute)).append(time.monotonic())

    def check_password(self, client: str, candidate: str) -> bool:
        ok = verify(candidate, self.password_hash)
        if not ok:
            self._failed(client)
        return ok

    def check_token(self, client: str, candidate: str) -> bool:
        key = hmac.new(self._cache_key, candidate.encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            if self._good_tokens.get(key, 0.0) > now:
                return True
        ok = verify(candidate, self.token_hash) or verify(candidate, self.password_hash)
        if not ok:
            self._failed(client)
            return False
        with self._lock:
            if len(self._good_tokens) >= 16:
                self._good_tokens.clear()
            self._good_tokens[key] = now + TOKEN_CACHE_S
        return True

    # --- sessions ------------------------------------------------------------------------------
    def open_session(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            for old in [k for k, s in self.sessions.items() if s.expires < now]:
                del self.sessions[old]
            if len(self.sessions) >= MAX_SESSIONS:
                del self.sessions[min(self.sessions, key=lambda k: self.sessions[k].expires)]
            self.sessions[sid] = Session(secrets.token_urlsafe(32), now + self.session_s)
        return sid

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            found = self.sessions.get(sid)
            if found is None or found.expires < time.monotonic():
                self.sessions.pop(sid, None)
                return None
            return found

    def close_session(self, sid: str | None) -> None:
        with self._lock:
            self.sessions.pop(sid or "", None)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens, False when either is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())
