"""Pages for managers (campaign progress, statistics, export download, campaign upload) and admins (users, the audit log)."""

from __future__ import annotations

import json
from pathlib import PurePath

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

from posttrain.errors import DataError
from posttrain.feedback.accounts import add_user
from posttrain.feedback.campaigns import create_campaign, parse_items, set_closed
from posttrain.feedback.db import ROLES, Audit, Campaign, Item, Judgment, User
from posttrain.feedback.export import audited_export, excluded_raters, set_exclusion
from posttrain.feedback.tasks import TASK_TYPES
from posttrain.feedback.web import Need, Principal, campaign_or_404, render

router = APIRouter(include_in_schema=False)
manager, admin = Need("manager"), Need("admin")


@router.get("/manage", response_class=HTMLResponse)
def campaigns(request: Request, who: Principal = Depends(manager), created: int | None = None) -> Response:
    with request.app.state.read() as s:
        rows = []
        for c in s.scalars(select(Campaign).order_by(Campaign.id)):
            items = s.scalar(select(func.count()).select_from(Item).where(Item.campaign_id == c.id))
            judged = s.scalar(select(func.count()).select_from(Judgment)
                              .where(Judgment.campaign_id == c.id, Judgment.revision == 0))
            raters = s.scalar(select(func.count(func.distinct(Judgment.rater_id))).where(Judgment.campaign_id == c.id))
            rows.append({"c": c, "n_items": items, "judged": judged, "needed": items * c.overlap, "raters": raters,
                         "excluded": excluded_raters(s, c.id)})
    return render(request, "manage.html", rows=rows, created=created)


@router.get("/manage/campaigns/{campaign_id}/export")
def export(request: Request, campaign_id: int, who: Principal = Depends(manager)) -> Response:
    with request.app.state.db() as s, s.begin():
        c = campaign_or_404(s, campaign_id)
        rows = audited_export(s, c.name, who.user_id, "page")
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return Response(body, media_type="application/jsonl",
                    headers={"Content-Disposition": f'attachment; filename="campaign-{c.id}.jsonl"'})


@router.get("/manage/campaigns/{campaign_id}/stats", response_class=HTMLResponse)
def campaign_stats_page(request: Request, campaign_id: int, who: Principal = Depends(manager)) -> Response:
    """Agreement, position bias and the leaderboard of one campaign (analysis.py); a campaign without judgments
    shows that one line."""
    from posttrain.feedback.analysis import FLAG_MARGIN, MIN_FLAG_ITEMS, campaign_stats

    with request.app.state.read() as s:
        c = campaign_or_404(s, campaign_id)
        try:
            result, error = campaign_stats(s, c.name), None
        except DataError as e:
            result, error = None, str(e)
    return render(request, "stats.html", c=c, stats=result, error=error, flag_margin=FLAG_MARGIN,
                  min_flag_items=MIN_FLAG_ITEMS)


@router.post("/manage/campaigns/{campaign_id}/close")
async def close(request: Request, campaign_id: int, who: Principal = Depends(manager)) -> Response:
    """Close a campaign or reopen it (the API's route, as a form); audited."""
    form = await request.form()
    with request.app.state.db() as s, s.begin():
        set_closed(s, campaign_or_404(s, campaign_id), form.get("closed", "1") == "1", who.user_id)
    return RedirectResponse("/manage", status_code=303)


@router.post("/manage/campaigns/{campaign_id}/exclusions")
async def exclude(request: Request, campaign_id: int, who: Principal = Depends(admin)) -> Response:
    """Exclude a rater from (or put them back into) a campaign's exports; audited (the API's route, as a form)."""
    form = await request.form()
    with request.app.state.db() as s, s.begin():
        c = campaign_or_404(s, campaign_id)
        try:
            set_exclusion(s, c, str(form.get("rater", "")).strip(), form.get("excluded", "1") == "1",
                          str(form.get("reason", ""))[:2000], who.user_id)
        except LookupError as e:
            raise HTTPException(404, str(e)) from None
    return RedirectResponse("/manage", status_code=303)


UPLOAD_DEFAULTS = {"name": "", "task": "pairwise", "overlap": "1", "lease_seconds": "900", "guidelines": "",
                   "rubric": ""}


def _upload_form(request: Request, status: int = 200, error: str | None = None,
                 values: dict[str, str] | None = None) -> Response:
    return render(request, "upload.html", status=status, error=error, values=values or UPLOAD_DEFAULTS,
                  tasks=TASK_TYPES, limit_mb=request.app.state.settings.upload_limit_mb)


def upload_limit(request: Request) -> None:
    """Refuse a body over the limit by its Content-Length, before anyone reads it (the CSRF check parses forms)."""
    limit = request.app.state.settings.upload_limit_mb * 2**20
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 2**16:  # room for the form's other fields
        raise HTTPException(413, f"the upload is over {request.app.state.settings.upload_limit_mb:g} MB; "
                                 "split the file or ask the admin to raise serve --upload-limit-mb")


@router.get("/manage/upload", response_class=HTMLResponse)
def upload_page(request: Request, who: Principal = Depends(manager)) -> Response:
    return _upload_form(request)


def _int(values: dict[str, str], key: str) -> int:
    try:
        return int(values[key])
    except ValueError:
        raise DataError(f"{key.replace('_', ' ')}: must be a whole number (got {values[key]!r})") from None


@router.post("/manage/upload", dependencies=[Depends(upload_limit)])
async def upload(request: Request, who: Principal = Depends(manager)) -> Response:
    """A campaign from an uploaded item file (the formats `posttrain feedback import` reads, campaigns.py)."""
    form = await request.form()
    values = {k: str(form.get(k, d)) for k, d in UPLOAD_DEFAULTS.items()}
    file = form.get("items")
    limit = request.app.state.settings.upload_limit_mb * 2**20
    try:
        if not isinstance(file, UploadFile) or not file.filename:
            raise DataError("items: choose a JSONL item file to upload")
        source = PurePath(file.filename).name[:120]
        raw = await file.read(int(limit) + 1)
        if len(raw) > limit:
            raise HTTPException(413, f"{source}: over {request.app.state.settings.upload_limit_mb:g} MB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{source}: byte {e.start}: not UTF-8 text (an item file is JSONL)") from None
        try:
            rubric = json.loads(values["rubric"]) if values["rubric"].strip() else []
        except json.JSONDecodeError as e:
            raise DataError(f"rubric: not JSON ({e.msg}), e.g. [{{\"name\": \"helpful\", \"min\": 1, \"max\": 5}}]"
                            ) from None
        if not isinstance(rubric, list) or not all(isinstance(sc, dict) for sc in rubric):
            raise DataError("rubric: must be a JSON list of scales {name, min, max}")
        items = parse_items(text, source)
        with request.app.state.db() as s, s.begin():
            c = create_campaign(s, values["name"].strip(), values["task"], items, overlap=_int(values, "overlap"),
                                guidelines=values["guidelines"], rubric=rubric,
                                lease_seconds=_int(values, "lease_seconds"), user_id=who.user_id)
    except DataError as e:
        return _upload_form(request, status=422, error=str(e).splitlines()[0], values=values)
    return RedirectResponse(f"/manage?created={c.id}", status_code=303)


@router.get("/admin/users", response_class=HTMLResponse)
def users(request: Request, who: Principal = Depends(admin), error: str | None = None) -> Response:
    with request.app.state.read() as s:
        rows = list(s.scalars(select(User).order_by(User.id)))
    return render(request, "users.html", users=rows, roles=ROLES, error=error)


@router.post("/admin/users")
async def create_user(request: Request, who: Principal = Depends(admin)) -> Response:
    form = await request.form()
    username, password, role = (str(form.get(k, "")).strip() for k in ("username", "password", "role"))
    try:
        with request.app.state.db() as s, s.begin():
            add_user(s, username, password, role, who.user_id, "page")
    except DataError as e:  # the users page again, with the rule broken and the name kept
        with request.app.state.read() as s:
            rows = list(s.scalars(select(User).order_by(User.id)))
        return render(request, "users.html", status=422, users=rows, roles=ROLES, error=str(e),
                      values={"username": username, "role": role})
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/active")
async def set_active(request: Request, user_id: int, who: Principal = Depends(admin)) -> Response:
    active = (await request.form()).get("active") == "1"
    with request.app.state.db() as s, s.begin():
        user = s.get(User, user_id)
        if user is None:
            raise HTTPException(404, "no such user")
        if user.id == who.user_id and not active:
            raise HTTPException(409, "you cannot deactivate yourself")
        user.active = active
        s.add(Audit(user_id=who.user_id, action="user.activate" if active else "user.deactivate",
                    target=f"user:{user.username}"))
    request.app.state.principals.drop()  # after the commit: the user's sessions and tokens stop now
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/audit", response_class=HTMLResponse)
def audit(request: Request, who: Principal = Depends(admin)) -> Response:
    with request.app.state.read() as s:
        rows = s.execute(select(Audit, User.username).outerjoin(User, User.id == Audit.user_id)
                         .order_by(Audit.id.desc()).limit(500)).all()
    return render(request, "audit.html", rows=rows)
