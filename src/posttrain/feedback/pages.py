"""The pages every user sees: log in and out, the campaign list with progress, the task page and its submit and
skip, one's recent judgments and their edit pages (an edit supersedes, never overwrites), and one's own API
tokens. A rater only ever reads their own leases and judgments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import exists, select
from sqlalchemy.orm import aliased

from posttrain.feedback import assign
from posttrain.feedback.db import ApiToken, Audit, Campaign, Item, Judgment, Lease, User, utcnow
from posttrain.feedback.db import Session as DbSession
from posttrain.feedback.security import burn_time, check_password, login_keys, new_token, origin_allowed, token_hash
from posttrain.feedback.tasks import CHOICES, FLAGS, AnswerError
from posttrain.feedback.web import COOKIE, Need, Principal, campaign_or_404, render, session_expiry

router = APIRouter(include_in_schema=False)
rater = Need("rater")
RECENT = 50  # judgments listed on /mine


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return render(request, "login.html")


@router.post("/login")
async def login(request: Request) -> Response:
    settings = request.app.state.settings
    if not origin_allowed(request.headers.get("origin"), request.headers.get("referer"), settings.public_url,
                          str(request.base_url)):  # login CSRF: another site's form logging a rater in as its user
        return render(request, "login.html", status=403, error="a login from another site's page is refused; "
                      "open this app's own login page (set --public-url to the address users open)")
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    client = request.client.host if request.client else "?"
    limiter, keys = request.app.state.login_limiter, login_keys(client, username, settings.login_limit)
    if limiter.blocked(keys):
        response = render(request, "login.html", status=429, error="too many failed logins; wait a minute")
        response.headers["Retry-After"] = "60"
        return response
    with request.app.state.db() as s, s.begin():
        user = s.scalar(select(User).where(User.username == username))
        right = user is not None and check_password(user.password_hash, password)
        ok = right and user.active
        if user is None:
            burn_time()
        if not ok:
            s.add(Audit(user_id=user.id if user else None, action="login.fail", target=f"user:{username[:80]}",
                        detail={"ip": client, **({"inactive": True} if right else {})}))
        else:
            raw = new_token()
            s.add(DbSession(token_hash=token_hash(raw), user_id=user.id, csrf_token=new_token(),
                            expires_at=session_expiry(settings.session_hours)))
            s.add(Audit(user_id=user.id, action="login", target=f"user:{username}", detail={"ip": client}))
    if right and not ok:  # the right password: telling them the account is off reveals nothing to a guesser
        return render(request, "login.html", status=403, error="this account is deactivated; ask an admin to "
                      "turn it back on")
    if not ok:
        limiter.failed(keys)
        return render(request, "login.html", status=401, error="wrong user name or password")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, raw, httponly=True, samesite="lax", max_age=int(settings.session_hours * 3600),
                        secure=settings.secure_cookies or (settings.public_url or "").startswith("https://"))
    return response


@router.post("/logout")
def logout(request: Request, who: Principal = Depends(rater)) -> Response:
    with request.app.state.db() as s, s.begin():
        raw = request.cookies.get(COOKIE, "")
        s.query(DbSession).filter_by(token_hash=token_hash(raw)).delete()
        s.add(Audit(user_id=who.user_id, action="logout", target=f"user:{who.username}"))
    request.app.state.principals.drop("s:" + token_hash(raw))  # after the commit: no lookup can re-cache it
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, who: Principal = Depends(rater)) -> Response:
    with request.app.state.read() as s:
        rows = [(c, assign.progress(s, c, who.user_id))
                for c in s.scalars(select(Campaign).where(Campaign.closed_at.is_(None)).order_by(Campaign.id))]
    return render(request, "home.html", campaigns=rows)


@router.get("/c/{campaign_id}/next")
def next_task(request: Request, campaign_id: int, who: Principal = Depends(rater), saved: int = 0) -> Response:
    with request.app.state.read() as s:
        campaign = campaign_or_404(s, campaign_id)
    lease_id = assign.next_lease(request.app.state.db, campaign_id, who.user_id, utcnow())
    if lease_id is None:
        with request.app.state.read() as s:
            done = assign.progress(s, campaign, who.user_id)
        return render(request, "done.html", campaign=campaign, progress=done, saved=bool(saved))
    return RedirectResponse(f"/task/{lease_id}" + ("?saved=1" if saved else ""), status_code=303)


def _own_lease(request: Request, lease_id: int, who: Principal, gone: str = f"{assign.GONE}; take the next"
               ) -> tuple[Lease, Item, Campaign]:
    """The lease, its item and campaign, if the lease is this user's; a 404 for another's lease (whether someone
    else holds lease N is none of a rater's business), a 409 saying why (`gone`) for one that is no more."""
    with request.app.state.read() as s:
        lease = s.get(Lease, lease_id)
        if lease is None:
            raise HTTPException(409, gone)
        if lease.rater_id != who.user_id:
            raise HTTPException(404, "no such task of yours")
        item = s.get(Item, lease.item_id)
        return lease, item, s.get(Campaign, item.campaign_id)


def _task_page(request: Request, lease: Lease, item: Item, campaign: Campaign, who: Principal, status: int = 200,
               error: str | None = None, saved: bool = False) -> Response:
    shown = [{"pos": pos, "label": chr(ord("A") + pos), "text": item.responses[i]["text"]}
             for pos, i in enumerate(lease.presentation)]  # text only: the model stays hidden
    with request.app.state.read() as s:
        prog = assign.progress(s, campaign, who.user_id)
    return render(request, "task.html", status=status, lease=lease, item=item, campaign=campaign, shown=shown,
                  progress=prog, error=error, flags=FLAGS, choices=CHOICES, action=f"/task/{lease.id}",
                  draft_key=f"lease:{lease.id}", editing=None, prefill=None, saved=saved)


@router.get("/task/{lease_id}", response_class=HTMLResponse)
def task(request: Request, lease_id: int, who: Principal = Depends(rater), saved: int = 0) -> Response:
    lease, item, campaign = _own_lease(request, lease_id, who)
    if lease.judged:
        return RedirectResponse(f"/c/{campaign.id}/next", status_code=303)
    return _task_page(request, lease, item, campaign, who, saved=bool(saved))


def answer_from_form(task_type: str, form: Any, k: int, rubric: list[dict[str, Any]]) -> dict[str, Any]:
    """The task page's form fields as an answer in display positions (tasks.read_answer checks it)."""
    answer: dict[str, Any] = {"flags": form.getlist("flags"), "comment": str(form.get("comment", ""))}
    if task_type == "pairwise":
        answer["choice"] = form.get("choice")
    elif task_type == "ranking":  # rank-POS = 1..k (1 best); a refusal names the responses, as the page labels them
        given = [str(form.get(f"rank-{pos}", "")).strip() for pos in range(k)]
        label = [chr(ord("A") + pos) for pos in range(k)]
        if missing := [label[pos] for pos in range(k) if not given[pos].isdigit()]:
            raise AnswerError(f"give every response a rank: {' and '.join(missing)} "
                              f"{'has' if len(missing) == 1 else 'have'} none yet")
        ranks = [int(g) for g in given]
        for n in sorted(set(ranks)):
            if (same := [label[pos] for pos in range(k) if ranks[pos] == n]) and len(same) > 1:
                raise AnswerError(f"each rank once: {' and '.join(same)} {'both' if len(same) == 2 else 'all'} "
                                  f"have rank {n}; give each response a different rank 1..{k}")
        if sorted(ranks) != list(range(1, k + 1)):
            raise AnswerError(f"give each response a different rank 1..{k}")
        answer["order"] = sorted(range(k), key=lambda pos: ranks[pos])
    elif task_type == "rubric":
        try:
            answer["scores"] = [{sc["name"]: int(form.get(f"score-{pos}-{sc['name']}", "")) for sc in rubric}
                                for pos in range(k)]
        except ValueError:
            raise AnswerError("give every response a score on every scale") from None
    elif task_type == "correction":
        answer["response"] = int(form.get("response", 0) or 0)
        answer["text"] = str(form.get("text", ""))
    return answer


def form_fields(task_type: str, payload: dict[str, Any], presentation: list[int]) -> dict[str, Any]:
    """A stored payload (response indices) as the task page's form fields (display positions): the inverse of
    answer_from_form, so an edit starts from the answer it replaces. Values are strings, as a form holds them."""
    fields: dict[str, Any] = {"flags": list(payload.get("flags", [])), "comment": payload.get("comment", "")}
    if task_type == "pairwise":
        fields["choice"] = payload["choice"]
    elif task_type == "ranking":
        fields.update({f"rank-{pos}": str(payload["order"].index(i) + 1) for pos, i in enumerate(presentation)})
    elif task_type == "rubric":
        fields.update({f"score-{pos}-{name}": str(v) for pos, i in enumerate(presentation)
                       for name, v in payload["scores"][i].items()})
    elif task_type == "correction":
        fields["response"] = str(presentation.index(payload["response"]))
        fields["text"] = payload["text"]
    return fields


def _not_stored_page(request: Request, form: Any) -> Response:
    """The task's time ran out and another rater was given it (or the lease is no more): the answer cannot be
    stored. Said in a rater's words, with what they wrote to copy (a correction, a comment: nothing typed is lost
    from sight) and a link on to the next task of the campaign (the form names it: the lease may be gone)."""
    campaign = str(form.get("campaign", ""))
    kept = [(label, str(form.get(key, "")).strip()) for key, label in (("text", "Your corrected text"),
                                                                        ("comment", "Your comment"))]
    return render(request, "error.html", status=409, message="This answer was not stored",
                  detail="Your time on this task ran out and it was given to another rater. Nothing is wrong "
                         "with your answer; take the next task.",
                  kept=[(label, text) for label, text in kept if text],
                  links=[(f"/c/{campaign}/next", "take the next task")] if campaign.isdigit() else [])


@router.post("/task/{lease_id}")
async def submit_task(request: Request, lease_id: int, who: Principal = Depends(rater)) -> Response:
    form = await request.form()
    try:
        lease, item, campaign = _own_lease(request, lease_id, who, gone=assign.NOT_STORED)
    except HTTPException as e:
        if e.status_code == 409:
            return _not_stored_page(request, form)
        raise
    try:
        seconds = float(form.get("seconds", "") or 0) or None
    except ValueError:
        seconds = None
    try:
        answer = answer_from_form(campaign.task_type, form, len(lease.presentation), campaign.rubric)
        assign.submit(request.app.state.db, lease_id, who.user_id, str(form.get("client_id", ""))[:64] or new_token(),
                      answer, utcnow(), seconds)
    except AnswerError as e:
        return _task_page(request, lease, item, campaign, who, status=422, error=str(e))
    except assign.AnsweredOtherwise as e:  # the same task answered in another tab first: say so, link both ways on
        return render(request, "error.html", status=409, message=e.summary,
                      links=[(f"/judgments/{e.judgment_id}/edit", "edit the answer that was kept"),
                             (f"/c/{campaign.id}/next", "take the next task")])
    except assign.Conflict as e:
        if str(e) == assign.NOT_STORED:
            return _not_stored_page(request, form)
        raise HTTPException(409, str(e)) from None
    return RedirectResponse(f"/c/{campaign.id}/next?saved=1", status_code=303)


@router.post("/task/{lease_id}/skip")
def skip_task(request: Request, lease_id: int, who: Principal = Depends(rater)) -> Response:
    try:  # a skip sent twice (a double click) goes on to the next task too
        campaign_id = assign.skip(request.app.state.db, lease_id, who.user_id, utcnow())
    except assign.Conflict as e:
        raise HTTPException(409, str(e)) from None
    target = f"/c/{campaign_id}/next"
    if request.headers.get("hx-request"):  # HTMX follows HX-Redirect with a full page load
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _summary(task_type: str, payload: dict[str, Any], presentation: list[int]) -> str:
    """One line saying what the rater answered, in the labels they saw (A is the first response shown)."""
    label = {i: chr(ord("A") + pos) for pos, i in enumerate(presentation)}
    if task_type == "pairwise":
        return {"A": "A better", "B": "B better", "tie": "tie", "both_bad": "both bad"}[payload["choice"]]
    if task_type == "ranking":
        return " > ".join(label[i] for i in payload["order"])
    if task_type == "rubric":
        return "; ".join(f"{label[i]}: " + ", ".join(f"{k} {v}" for k, v in sc.items())
                         for i, sc in sorted(enumerate(payload["scores"]), key=lambda x: label[x[0]]))
    return f"corrected {label[payload['response']]}: {payload['text'][:60]}"


@router.get("/mine", response_class=HTMLResponse)
def my_judgments(request: Request, who: Principal = Depends(rater), edited: int | None = None) -> Response:
    """The rater's own latest judgments, newest first, each with an edit link."""
    newer = aliased(Judgment)
    with request.app.state.read() as s:
        rows = s.execute(select(Judgment, Campaign.name, Campaign.task_type, Item.prompt)
                         .join(Campaign, Campaign.id == Judgment.campaign_id).join(Item, Item.id == Judgment.item_id)
                         .where(Judgment.rater_id == who.user_id, ~exists().where(newer.supersedes_id == Judgment.id))
                         .order_by(Judgment.id.desc()).limit(RECENT)).all()
    shown = [{"j": j, "campaign": name, "prompt": prompt[-1]["content"][:120] if prompt else "",
              "answer": _summary(task_type, j.payload, j.presentation)} for j, name, task_type, prompt in rows]
    return render(request, "mine.html", rows=shown, edited=edited, recent=RECENT)


def _own_judgment(request: Request, judgment_id: int, who: Principal) -> tuple[Judgment, Item, Campaign]:
    with request.app.state.read() as s:
        j = s.get(Judgment, judgment_id)
        if j is None or j.rater_id != who.user_id:
            raise HTTPException(404, "no such judgment of yours")
        return j, s.get(Item, j.item_id), s.get(Campaign, j.campaign_id)


def _edit_page(request: Request, j: Judgment, item: Item, campaign: Campaign, status: int = 200,
               error: str | None = None) -> Response:
    shown = [{"pos": pos, "label": chr(ord("A") + pos), "text": item.responses[i]["text"]}
             for pos, i in enumerate(j.presentation)]
    return render(request, "task.html", status=status, item=item, campaign=campaign, shown=shown, error=error,
                  flags=FLAGS, choices=CHOICES, action=f"/judgments/{j.id}/edit", draft_key=f"edit:{j.id}",
                  editing=j, prefill=form_fields(campaign.task_type, j.payload, j.presentation))


@router.get("/judgments/{judgment_id}/edit", response_class=HTMLResponse)
def edit_page(request: Request, judgment_id: int, who: Principal = Depends(rater)) -> Response:
    return _edit_page(request, *_own_judgment(request, judgment_id, who))


@router.post("/judgments/{judgment_id}/edit")
async def edit_judgment(request: Request, judgment_id: int, who: Principal = Depends(rater)) -> Response:
    """A new revision that supersedes the judgment (append-only: the old row stays; the export takes the newest)."""
    j, item, campaign = _own_judgment(request, judgment_id, who)
    form = await request.form()
    try:
        answer = answer_from_form(campaign.task_type, form, len(j.presentation), campaign.rubric)
        w = assign.edit(request.app.state.db, judgment_id, who.user_id,
                        str(form.get("client_id", ""))[:64] or new_token(), answer, utcnow())
    except AnswerError as e:
        return _edit_page(request, j, item, campaign, status=422, error=str(e))
    except assign.Conflict as e:
        raise HTTPException(409, str(e)) from None
    return RedirectResponse(f"/mine?edited={w.judgment_id}", status_code=303)


@router.get("/tokens", response_class=HTMLResponse)
def tokens(request: Request, who: Principal = Depends(rater), new: str | None = None) -> Response:
    with request.app.state.read() as s:
        rows = list(s.scalars(select(ApiToken).where(ApiToken.user_id == who.user_id).order_by(ApiToken.id)))
    return render(request, "tokens.html", tokens=rows, new=new)


@router.post("/tokens", response_class=HTMLResponse)
async def create_token(request: Request, who: Principal = Depends(rater)) -> Response:
    name = str((await request.form()).get("name", "")).strip()[:80] or "script"
    raw = new_token("pt_")
    with request.app.state.db() as s, s.begin():
        s.add(ApiToken(user_id=who.user_id, name=name, token_hash=token_hash(raw)))
        s.add(Audit(user_id=who.user_id, action="token.create", target=f"token:{name}"))
        rows = list(s.scalars(select(ApiToken).where(ApiToken.user_id == who.user_id).order_by(ApiToken.id)))
    return render(request, "tokens.html", tokens=rows, new=raw)  # shown once, never stored in clear


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: int, who: Principal = Depends(rater)) -> Response:
    with request.app.state.db() as s, s.begin():
        tok = s.get(ApiToken, token_id)
        if tok is None or (tok.user_id != who.user_id and not who.can("admin")):
            raise HTTPException(404, "no such token of yours")
        if tok.revoked_at is None:
            tok.revoked_at = utcnow()
            s.add(Audit(user_id=who.user_id, action="token.revoke", target=f"token:{tok.id}"))
    request.app.state.principals.drop("t:" + tok.token_hash)  # after the commit: no lookup can re-cache it
    if request.headers.get("hx-request"):
        return HTMLResponse("<td>revoked</td>")
    return RedirectResponse("/tokens", status_code=303)

