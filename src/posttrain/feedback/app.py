"""The FastAPI application: settings, wiring, error pages and security headers; the routes live in pages.py
(raters), manage.py (managers and admins) and api.py (the JSON API for scripts).

`create_app(Settings(db=...))` upgrades the schema to the newest migration, then serves. The OpenAPI schema is at
/openapi.json, for logged-in users and token holders; FastAPI's own docs pages are off (they load scripts from a
CDN, which the CSP forbids).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import sessionmaker

from posttrain.feedback import migrate
from posttrain.feedback.db import make_engine
from posttrain.feedback.render import markdown_html, response_html
from posttrain.feedback.security import HEADERS, RateLimiter
from posttrain.feedback.web import LoginRequired, Principal, PrincipalCache, render

HERE = Path(__file__).resolve().parent


@dataclass
class Settings:
    db: str = "sqlite:///feedback.db"
    public_url: str | None = None  # https://feedback.example.org: the Origin that state-changing requests must have
    secure_cookies: bool = False  # set the cookie's Secure flag (on when public_url is https)
    session_hours: float = 12.0
    login_limit: int = 5  # failed logins a minute per user name from one address, then 429 (security.login_keys)
    upload_limit_mb: float = 20.0  # the largest item file a manager may upload on /manage/upload
    migrate: bool = True


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, and no caching of pages (a plain ASGI wrapper;
    Starlette's BaseHTTPMiddleware costs a task and a stream per request)."""

    def __init__(self, app):  # noqa: ANN001
        self.app = app
        self.static = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
        self.dynamic = [*self.static, (b"cache-control", b"no-store")]  # both built once, not per request

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.static if scope["path"].startswith("/static/") else self.dynamic

        async def send_with_headers(message):  # noqa: ANN001
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


SETTINGS_ENV = "POSTTRAIN_FEEDBACK_SETTINGS"  # how `serve --workers N` hands its settings to each worker process


def app_from_env() -> FastAPI:
    """The app for one of several uvicorn worker processes (`serve --workers N`): settings from SETTINGS_ENV."""
    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


def create_app(settings: Settings) -> FastAPI:
    from posttrain.feedback import api, manage, pages

    engine = make_engine(settings.db)
    if settings.migrate:
        migrate.upgrade(engine)
    app = FastAPI(title="posttrain feedback", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.db = sessionmaker(engine, expire_on_commit=False)  # transactions that write (assign.py's and others)
    app.state.read = sessionmaker(make_engine(settings.db, write=False), expire_on_commit=False)
    # SQLite takes one writer at a time (db.WriterLock): a judgment is stored on the event loop itself, as handing
    # it to a worker thread and back cost more CPU than the write (on 2 cores: 216-271 -> 370-402 judgments/s,
    # bench/feedback.py). PostgreSQL writes in parallel over the network, so there it stays in the thread pool.
    app.state.inline_writes = engine.dialect.name == "sqlite"
    app.state.login_limiter = RateLimiter(60.0)
    app.state.principals = PrincipalCache()
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    templates.env.filters["markdown"] = markdown_html
    templates.env.filters["response_markdown"] = response_html
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)  # first: the busiest routes (scripts, the benchmark) match after fewer tries
    app.include_router(pages.router)
    app.include_router(manage.router)

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _e: LoginRequired):  # noqa: ANN202
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):  # noqa: ANN202
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": e.detail}, status_code=e.status_code, headers=e.headers)
        return render(request, "error.html", status=e.status_code, message=e.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):  # noqa: ANN202
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":  # loc is ("body", character offset)
            why = (first.get("ctx") or {}).get("error", "JSON decode error")
            at = first.get("loc", ("body", "?"))[-1]
            return JSONResponse({"detail": f"the request body is not JSON ({why} at character {at}); send "
                                           "Content-Type: application/json with a JSON object"}, status_code=422)
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_schema(who: Principal = Depends(api.rater)) -> dict:
        """The API's schema, for anyone logged in or holding a token (an anonymous caller gets 401)."""
        return app.openapi()

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    return app
