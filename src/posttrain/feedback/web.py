"""Who is asking, and may they: the request dependencies every route uses, and the page renderer.

`Need(role)` is the one door: it finds the user from the session cookie or an API bearer token, refuses the
inactive, checks the role (rater < manager < admin), and on a state-changing request authenticated by cookie
checks the CSRF token and the Origin. Pages answer a missing login with a redirect to /login, the API with 401.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from posttrain.feedback.db import ROLES, ApiToken, Session, User, utcnow
from posttrain.feedback.security import origin_allowed, same_token, token_hash

COOKIE = "pt_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    csrf: str | None  # the session's CSRF token; None for API tokens

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class LoginRequired(Exception):
    """Raised for pages without a login; the app turns it into a redirect to /login."""


class PrincipalCache:
    """Who a session or API token is, remembered for `ttl` seconds so that a busy rater's every request does not
    look it up again. Logging out, revoking a token and deactivating a user drop the entries in this process at
    once; other server processes (if you run several) notice within `ttl`."""

    def __init__(self, ttl: float = 5.0):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, who: Principal) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl, who)

    def drop(self, key: str | None = None) -> None:
        """Forget one session or token (by its hash), or everyone (None)."""
        with self._lock:
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)


def _cached(request: Request, key: str, lookup) -> Principal | None:  # noqa: ANN001
    cache: PrincipalCache = request.app.state.principals
    who = cache.get(key)
    if who is None:
        who = lookup()
        if who is not None:
            cache.put(key, who)
    return who


def _from_cookie(request: Request) -> Principal | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    return _cached(request, "s:" + token_hash(raw), lambda: _session_lookup(request, raw))


def _session_lookup(request: Request, raw: str) -> Principal | None:
    with request.app.state.read() as s:
        row = s.execute(select(Session.csrf_token, Session.expires_at, User.id, User.username, User.role, User.active)
                        .join(User, User.id == Session.user_id)
                        .where(Session.token_hash == token_hash(raw))).first()
    if row is None or row.expires_at < utcnow() or not row.active:
        return None
    return Principal(row.id, row.username, row.role, row.csrf_token)


def _from_bearer(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    digest = token_hash(header[7:].strip())
    who = _cached(request, "t:" + digest, lambda: _token_lookup(request, digest))
    if who is None:
        raise HTTPException(401, "this API token is unknown or revoked")
    return who


def _token_lookup(request: Request, digest: str) -> Principal | None:
    with request.app.state.read() as s:
        row = s.execute(select(ApiToken.revoked_at, User.id, User.username, User.role, User.active)
                        .join(User, User.id == ApiToken.user_id)
                        .where(ApiToken.token_hash == digest)).first()
    if row is None or row.revoked_at is not None or not row.active:
        return None
    return Principal(row.id, row.username, row.role, None)


def principal(request: Request) -> Principal | None:
    cached = getattr(request.state, "principal", False)
    if cached is False:
        cached = request.state.principal = _from_bearer(request) or _from_cookie(request)
    return cached


async def check_csrf(request: Request, who: Principal) -> None:
    """A cookie-authenticated POST must carry the session's CSRF token and come from our own origin."""
    if request.method in SAFE_METHODS or who.csrf is None:
        return
    settings = request.app.state.settings
    if not origin_allowed(request.headers.get("origin"), request.headers.get("referer"), settings.public_url,
                          str(request.base_url)):
        raise HTTPException(403, "cross-origin request refused (set --public-url to the address users open)")
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = (await request.form()).get("csrf_token")
    if not same_token(sent, who.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


class Need:
    """Dependency: the request's user, who must hold at least `role`."""

    def __init__(self, role: str):
        assert role in ROLES
        self.role = role

    async def __call__(self, request: Request) -> Principal:
        who = principal(request)
        if who is None:
            if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":  # JSON: no redirect
                raise HTTPException(401, "log in or send an API token (Authorization: Bearer ...)")
            raise LoginRequired()
        await check_csrf(request, who)
        if not who.can(self.role):
            raise HTTPException(403, f"this needs the {self.role} role")
        return who


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    who = principal(request)
    return request.app.state.templates.TemplateResponse(
        request, template, {"who": who, **context}, status_code=status)


def session_expiry(hours: float) -> dt.datetime:
    return utcnow() + dt.timedelta(hours=hours)


def campaign_or_404(s, campaign_id: int):
    """The campaign with this id, or a 404 (every route that takes a campaign id in its path)."""
    from fastapi import HTTPException

    from posttrain.feedback.db import Campaign

    campaign = s.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(404, "no such campaign")
    return campaign
