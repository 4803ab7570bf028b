"""Pages for managers (campaign progress, export download) and admins (users, the audit log)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select

from posttrain.feedback.db import ROLES, Audit, Campaign, Item, Judgment, User
from posttrain.feedback.export import export_rows
from posttrain.feedback.security import hash_password
from posttrain.feedback.web import Need, Principal, campaign_or_404, render

router = APIRouter(include_in_schema=False)
manager, admin = Need("manager"), Need("admin")


@router.get("/manage", response_class=HTMLResponse)
def campaigns(request: Request, who: Principal = Depends(manager)) -> Response:
    with request.app.state.read() as s:
        rows = []
        for c in s.scalars(select(Campaign).order_by(Campaign.id)):
            items = s.scalar(select(func.count()).select_from(Item).where(Item.campaign_id == c.id))
            judged = s.scalar(select(func.count()).select_from(Judgment)
                              .where(Judgment.campaign_id == c.id, Judgment.revision == 0))
            raters = s.scalar(select(func.count(func.distinct(Judgment.rater_id))).where(Judgment.campaign_id == c.id))
            rows.append({"c": c, "n_items": items, "judged": judged, "needed": items * c.overlap, "raters": raters})
    return render(request, "manage.html", rows=rows)


@router.get("/manage/campaigns/{campaign_id}/export")
def export(request: Request, campaign_id: int, who: Principal = Depends(manager)) -> Response:
    with request.app.state.read() as s:
        c = campaign_or_404(s, campaign_id)
        rows, _ = export_rows(s, c.name)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return Response(body, media_type="application/jsonl",
                    headers={"Content-Disposition": f'attachment; filename="campaign-{c.id}.jsonl"'})


@router.get("/admin/users", response_class=HTMLResponse)
def users(request: Request, who: Principal = Depends(admin), error: str | None = None) -> Response:
    with request.app.state.read() as s:
        rows = list(s.scalars(select(User).order_by(User.id)))
    return render(request, "users.html", users=rows, roles=ROLES, error=error)


@router.post("/admin/users")
async def create_user(request: Request, who: Principal = Depends(admin)) -> Response:
    form = await request.form()
    username, password, role = (str(form.get(k, "")).strip() for k in ("username", "password", "role"))
    if not username or len(password) < 8 or role not in ROLES:
        with request.app.state.read() as s:
            rows = list(s.scalars(select(User).order_by(User.id)))
        return render(request, "users.html", status=422, users=rows, roles=ROLES,
                      error="a user needs a name, a password of 8 characters or more, and a role")
    with request.app.state.db() as s, s.begin():
        if s.scalar(select(User.id).where(User.username == username)) is not None:
            raise HTTPException(409, f"user {username!r} exists already")
        s.add(User(username=username, password_hash=hash_password(password), role=role, active=True))
        s.add(Audit(user_id=who.user_id, action="user.create", target=f"user:{username}", detail={"role": role}))
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
