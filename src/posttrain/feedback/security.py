"""Passwords, tokens, CSRF, login rate limiting and the security headers; no routes, no database queries.

- Passwords: argon2id (argon2-cffi's defaults, RFC 9106's second recommended setting).
- Session and API tokens: 32 random bytes; only their sha256 is stored, so a copy of the database logs no one in.
- CSRF: a token bound to the session (stored with it) must come with every state-changing request that a cookie
  authenticates, as the form field `csrf_token` or the `X-CSRF-Token` header (HTMX sends it); and the request's
  Origin (else Referer), when the browser sends one, must be the app's own: the configured public URL behind a
  reverse proxy, else the Host the request was sent to. API calls with a bearer token carry no cookie and need none.
- Login rate limit: failed logins in a sliding minute per user name from one address, and (more of them) per
  user name from anywhere and per address over all names -> 429 (`login_keys`): one rater's typos lock out only
  that name at that address, not every rater behind the same office address.
- Headers: a strict Content-Security-Policy (scripts and styles only from our own static files, nothing inline),
  nosniff, no framing, no referrer leaking across sites.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY = hash_password("not a real password")


def burn_time() -> None:
    """Spend one verification's time for an unknown user, so timing does not tell which user names exist."""
    check_password(_DUMMY, "x")


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a, b)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def origin_allowed(origin: str | None, referer: str | None, public_url: str | None, host_url: str) -> bool:
    """True when the request's Origin (else Referer) is ours. `public_url` is what users type (the reverse proxy's
    address); without it, the URL the request reached us at. A request with neither header is judged by its CSRF
    token alone (some privacy settings strip both)."""
    expected = origin_of(public_url or host_url)
    sent = origin or (origin_of(referer) if referer else None)
    if sent is None:
        return True
    return sent.lower() == expected


def login_keys(address: str, username: str, limit: int) -> dict[str, int]:
    """The rate limiter's keys for a login and each one's failures a minute: `limit` for this name from this
    address, 4x for this name from all addresses (a guesser spread over many), 10x for this address over all
    names (one trying many names)."""
    name = username.lower()
    return {f"ip+user:{address}:{name}": limit, f"user:{name}": 4 * limit, f"ip:{address}": 10 * limit}


class RateLimiter:
    """At most a key's limit of failures in the last `window` seconds; in memory (one server process)."""

    def __init__(self, window: float = 60.0, clock=time.monotonic):  # noqa: ANN001
        self.window, self.clock = window, clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque[float]:
        q, cutoff = self._events[key], self.clock() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, limits: dict[str, int]) -> bool:
        """Whether any key has reached its limit (`limits`: key -> failures allowed in the window)."""
        with self._lock:
            return any(len(self._recent(k)) >= n for k, n in limits.items())

    def failed(self, limits: dict[str, int]) -> None:
        with self._lock:
            for k in limits:
                self._recent(k).append(self.clock())
