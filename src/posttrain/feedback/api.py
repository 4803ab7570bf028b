"""The JSON API for scripts (bearer tokens; a browser session works too, with its CSRF header): campaigns,
leases, judgments, edits, skips, export. Described by the OpenAPI schema at /openapi.json."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select

from posttrain.errors import DataError
from posttrain.feedback import assign
from posttrain.feedback.campaigns import create_campaign, items_from_rows, set_closed
from posttrain.feedback.db import Campaign, Item, Lease, utcnow
from posttrain.feedback.export import audited_export, set_exclusion
from posttrain.feedback.tasks import AnswerError
from posttrain.feedback.web import Need, Principal, campaign_or_404

router = APIRouter(prefix="/api", tags=["api"])
rater, manager, admin = Need("rater"), Need("manager"), Need("admin")


class Me(BaseModel):
    id: int
    username: str
    role: str


class CampaignOut(BaseModel):
    id: int
    name: str
    task_type: str
    overlap: int
    guidelines: str
    rubric: list[dict[str, Any]]
    closed: bool = Field(False, description="closed: no new tasks; its judgments stay and export")


class CampaignIn(BaseModel):
    name: str
    task_type: str = "pairwise"
    overlap: int = 1
    guidelines: str = ""
    rubric: list[dict[str, Any]] = []
    lease_seconds: int = 900
    items: list[dict[str, Any]] = Field(description="the lines of an item file, as JSON objects: "
                                        '{"prompt", "responses"} (strings, message lists or {"text", "model"}) '
                                        'with optional "models", {"prompt", "chosen", "rejected"}, or '
                                        '{"prompt", "completion", "model"} (docs/feedback.md, Item files)')


class Task(BaseModel):
    lease_id: int
    expires_at: str
    prompt: list[dict[str, str]]
    responses: list[str] = Field(description="the responses in this rater's display order (positions 0..K-1)")


class Answer(BaseModel):
    client_id: str = Field(min_length=8, max_length=64, description="unique per vote: a resend is stored once")
    answer: dict[str, Any] = Field(description="in display positions; see posttrain.feedback.tasks")
    seconds: float | None = None


class Stored(BaseModel):
    judgment_id: int
    created: bool
    next: Task | None = Field(None, description="with ?next=true: your next task (null when none is left)")


class Progress(BaseModel):
    mine: int
    open_for_me: int
    judged: int
    needed: int


@router.get("/me", response_model=Me)
def me(who: Principal = Depends(rater)) -> Me:
    return Me(id=who.user_id, username=who.username, role=who.role)


def _campaign_out(c: Campaign) -> CampaignOut:
    return CampaignOut(id=c.id, name=c.name, task_type=c.task_type, overlap=c.overlap, guidelines=c.guidelines,
                       rubric=c.rubric, closed=c.closed_at is not None)


@router.get("/campaigns", response_model=list[CampaignOut])
def list_campaigns(request: Request, who: Principal = Depends(rater)) -> list[CampaignOut]:
    with request.app.state.read() as s:
        return [_campaign_out(c) for c in s.scalars(select(Campaign).order_by(Campaign.id))]


@router.post("/campaigns", response_model=CampaignOut, status_code=201)
def new_campaign(request: Request, body: CampaignIn, who: Principal = Depends(manager)) -> CampaignOut:
    try:
        with request.app.state.db() as s, s.begin():
            items = items_from_rows([(f"items[{i}]", row) for i, row in enumerate(body.items)])
            c = create_campaign(s, body.name, body.task_type, items,
                                overlap=body.overlap, guidelines=body.guidelines, rubric=body.rubric,
                                lease_seconds=body.lease_seconds, user_id=who.user_id)
            return _campaign_out(c)
    except DataError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/campaigns/{campaign_id}/progress", response_model=Progress)
def progress(request: Request, campaign_id: int, who: Principal = Depends(rater)) -> Progress:
    with request.app.state.read() as s:
        c = campaign_or_404(s, campaign_id)
        return Progress(**vars(assign.progress(s, c, who.user_id)))


_TASK = (select(Lease.expires_at, Lease.presentation, Item.prompt, Item.responses)
         .join(Item, Item.id == Lease.item_id).where(Lease.id == bindparam("lease")))  # built once: a hot path


def _task(request: Request, lease_id: int | None) -> Task | None:
    if lease_id is None:
        return None
    with request.app.state.read() as s:
        row = s.connection().execute(_TASK, {"lease": lease_id}).one()
    return Task(lease_id=lease_id, expires_at=row.expires_at.isoformat() + "Z", prompt=row.prompt,
                responses=[row.responses[i]["text"] for i in row.presentation])


def _next(request: Request, campaign_id: int, who: Principal) -> Task | None:
    return _task(request, assign.next_lease(request.app.state.db, campaign_id, who.user_id, utcnow()))


@router.post("/campaigns/{campaign_id}/next", response_model=Task | None)
def next_task(request: Request, campaign_id: int, who: Principal = Depends(rater)) -> Task | None:
    """A lease on the next item for you (your open one if you hold one); null when nothing is left for you."""
    with request.app.state.read() as s:
        campaign_or_404(s, campaign_id)
    return _next(request, campaign_id, who)


@router.post("/leases/{lease_id}/judgment", response_model=Stored)
async def judge(request: Request, lease_id: int, body: Answer, who: Principal = Depends(rater),
                next: bool = False) -> Stored:
    """Store your answer for this lease (once per client id); with `next=true`, also lease your next item, in the
    same round trip."""
    store = partial(_store, request, lease_id, body, who, next)
    return store() if request.app.state.inline_writes else await run_in_threadpool(store)  # see app.create_app


def _store(request: Request, lease_id: int, body: Answer, who: Principal, next: bool) -> Stored:
    try:
        if next:  # one transaction for both (assign.submit_and_next)
            w, next_id = assign.submit_and_next(request.app.state.db, lease_id, who.user_id, body.client_id,
                                                body.answer, utcnow(), body.seconds)
        else:
            w, next_id = assign.submit(request.app.state.db, lease_id, who.user_id, body.client_id, body.answer,
                                       utcnow(), body.seconds), None
    except AnswerError as e:
        raise HTTPException(422, str(e)) from None
    except assign.Conflict as e:
        raise HTTPException(409, str(e)) from None
    return Stored(judgment_id=w.judgment_id, created=w.created, next=_task(request, next_id))


@router.post("/leases/{lease_id}/skip", status_code=204)
def skip(request: Request, lease_id: int, who: Principal = Depends(rater)) -> None:
    try:
        assign.skip(request.app.state.db, lease_id, who.user_id, utcnow())
    except assign.Conflict as e:
        raise HTTPException(409, str(e)) from None


@router.post("/judgments/{judgment_id}/edit", response_model=Stored)
def edit(request: Request, judgment_id: int, body: Answer, who: Principal = Depends(rater)) -> Stored:
    """A new revision of your judgment; the old one stays, superseded."""
    try:
        w = assign.edit(request.app.state.db, judgment_id, who.user_id, body.client_id, body.answer, utcnow())
    except AnswerError as e:
        raise HTTPException(422, str(e)) from None
    except assign.Conflict as e:
        raise HTTPException(409, str(e)) from None
    return Stored(judgment_id=w.judgment_id, created=w.created)


@router.get("/campaigns/{campaign_id}/export")
def export(request: Request, campaign_id: int, who: Principal = Depends(manager)) -> list[dict[str, Any]]:
    """The campaign's judgments as the project's records (see posttrain.feedback.export)."""
    with request.app.state.db() as s, s.begin():
        c = campaign_or_404(s, campaign_id)
        return audited_export(s, c.name, who.user_id, "api")


class ExclusionIn(BaseModel):
    rater: str = Field(description="the rater's user name")
    excluded: bool = Field(True, description="true: leave their judgments out of this campaign's exports; false: "
                                             "put them back")
    reason: str = Field("", max_length=2000)


class CloseIn(BaseModel):
    closed: bool = Field(True, description="true closes the campaign (raters get no new task), false reopens it")


@router.post("/campaigns/{campaign_id}/close", response_model=CampaignOut)
def close(request: Request, campaign_id: int, body: CloseIn, who: Principal = Depends(manager)) -> CampaignOut:
    """Close a campaign, or reopen it: a closed one gives raters no new task and leaves their lists; a task a
    rater holds can still be answered, and the judgments stay, export and count. Audited."""
    with request.app.state.db() as s, s.begin():
        c = campaign_or_404(s, campaign_id)
        set_closed(s, c, body.closed, who.user_id)
        return _campaign_out(c)


@router.post("/campaigns/{campaign_id}/exclusions", response_model=list[str])
def exclude(request: Request, campaign_id: int, body: ExclusionIn, who: Principal = Depends(admin)) -> list[str]:
    """Exclude a rater from (or put them back into) this campaign's exports; their judgments stay in the database.
    Audited. Returns the user names excluded now."""
    with request.app.state.db() as s, s.begin():
        c = campaign_or_404(s, campaign_id)
        try:
            return set_exclusion(s, c, body.rater, body.excluded, body.reason, who.user_id)
        except LookupError as e:
            raise HTTPException(404, str(e)) from None
