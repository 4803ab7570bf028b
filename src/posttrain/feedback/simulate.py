"""Simulated raters that judge a campaign through the HTTP API, and a server in a background thread to judge on.

A `SimulatedHttpRater` is a user of the app with its own API token. It leases items one after another
(`POST /api/campaigns/{id}/next`, then `POST /api/leases/{id}/judgment?next=true`) and answers each with the
judgment of a wrapped `tasks.raters.Rater` (e.g. `tasks.arithmetic_raters.make_rater("correctness")`), like a
person would: it sees only the prompt and the response texts in its display order, never which model wrote what.
With probability `noise` it answers at random instead (pairwise: A or B; ranking: a random order), so noise 1.0
is a rater who clicks without reading. Whether an answer is random, and what it is, is drawn from a number hashed
from (seed, rater name, prompt, the texts shown), so a rerun gives the same judgments whatever the order leases
come in. When the wrapped rater cannot tell the responses apart in a ranking (`rank` returns None) the rater
skips the item, as a person would; a pairwise tie is answered "tie".

The API shows prompts as messages only. Raters that need the prompt's reference fields (the arithmetic raters
read `answer`) get them from `references`, the prompt records the campaign was made from, matched by messages.

`add_raters(db_url, names)` makes the users and tokens (as an admin would), `serve_in_thread(db_url)` runs
`posttrain feedback serve`'s app with uvicorn on a free port until the block ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from posttrain.data.records import Message, Prompt
from posttrain.errors import DataError
from posttrain.tasks.raters import Judgment, Rater

CHOICE = {Judgment.A: "A", Judgment.B: "B", Judgment.TIE: "tie"}


def _key(messages: Iterable[dict[str, str]] | Iterable[Message]) -> str:
    rows = [[m["role"], m["content"]] if isinstance(m, dict) else [m.role, m.content] for m in messages]
    return json.dumps(rows, ensure_ascii=False)


def _draw(*parts: object) -> random.Random:
    """A generator seeded by a hash of `parts`: the same lease content always gives the same draws."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass
class SimulatedHttpRater:
    """One rater of the app, judging through its JSON API with `token`, by `rater`'s preference plus noise."""

    rater: Rater
    token: str
    noise: float = 0.0
    """Chance, in [0, 1], that an answer is random instead of `rater`'s judgment."""
    seed: int = 0
    references: dict[str, Prompt] = field(default_factory=dict)
    """Prompt records by `reference_key(messages)`; `reference_index(prompts)` builds it."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {self.noise}")

    @property
    def name(self) -> str:
        return self.rater.name

    def prompt_of(self, messages: list[dict[str, str]]) -> Prompt:
        """The record this rater judges against: the reference one when known, else the messages alone."""
        known = self.references.get(_key(messages))
        return known if known is not None else Prompt(tuple(Message(m["role"], m["content"]) for m in messages))

    def answer(self, task_type: str, messages: list[dict[str, str]], responses: list[str]) -> dict[str, Any] | None:
        """The answer (display positions) to one task, or None to skip it. A DataError says how to give the
        reference answers when the rater needs them (the arithmetic raters do) and `references` has none."""
        try:
            return self._answer(task_type, messages, responses)
        except DataError as e:
            if _key(messages) in self.references:
                raise
            raise DataError(f"simulated rater {self.name!r}: {e}; the API sends only the prompt's text, so give the "
                            "rater the prompt records the campaign was made from: SimulatedHttpRater(..., "
                            "references=reference_index(prompts))") from None

    def _answer(self, task_type: str, messages: list[dict[str, str]], responses: list[str]) -> dict[str, Any] | None:
        rng = _draw(self.seed, self.name, task_type, _key(messages), responses)
        random_answer = rng.random() < self.noise
        if task_type == "pairwise":
            if random_answer:
                return {"choice": rng.choice(["A", "B"])}
            return {"choice": CHOICE[self.rater.compare(self.prompt_of(messages), responses[0], responses[1])]}
        if task_type == "ranking":
            if random_answer:
                order = list(range(len(responses)))
                rng.shuffle(order)
                return {"order": order}
            ranked = self.rater.rank(self.prompt_of(messages), responses)
            return None if ranked is None else {"order": ranked}
        raise ValueError(f"simulated raters judge pairwise and ranking campaigns, not {task_type!r}")

    def judge(self, client: Any, campaign: str, limit: int | None = None) -> Counter:
        """Judge `campaign` (by name) until nothing is left for this rater or `limit` answers are stored.

        `client` is an `httpx.Client` on the app (see `client_for`); this rater's token is sent with each
        request. Returns counts of the answers stored, by choice (pairwise) or "ranked", and "skipped"."""
        auth = {"Authorization": f"Bearer {self.token}"}

        def get(path: str) -> Any:
            r = client.get(path, headers=auth)
            r.raise_for_status()
            return r.json()

        def post(path: str, body: dict | None = None) -> Any:
            r = client.post(path, json=body or {}, headers=auth)
            r.raise_for_status()
            return None if r.status_code == 204 else r.json()

        found = [c for c in get("/api/campaigns") if c["name"] == campaign]
        if not found:
            raise LookupError(f"no campaign named {campaign!r} on the server")
        cid, task_type = found[0]["id"], found[0]["task_type"]
        counts: Counter = Counter()
        task = post(f"/api/campaigns/{cid}/next")
        while task is not None and (limit is None or counts.total() - counts["skipped"] < limit):
            answer = self.answer(task_type, task["prompt"], task["responses"])
            if answer is None:
                post(f"/api/leases/{task['lease_id']}/skip")
                counts["skipped"] += 1
                task = post(f"/api/campaigns/{cid}/next")
                continue
            client_id = f"sim-{task['lease_id']}-{self.name}"[:64]  # a resend of the same vote is stored once
            counts[answer.get("choice", "ranked")] += 1
            more = limit is None or counts.total() - counts["skipped"] < limit  # else lease nothing more
            stored = post(f"/api/leases/{task['lease_id']}/judgment?next={str(more).lower()}",
                          {"client_id": client_id, "answer": answer})
            task = stored["next"]
        return counts


def reference_index(prompts: Iterable[Prompt]) -> dict[str, Prompt]:
    """Prompt records by their messages, for `SimulatedHttpRater.references`."""
    return {_key(p.prompt): p for p in prompts}


def client_for(target: Any) -> Any:
    """An `httpx.Client` on `target`: a base URL (`http://127.0.0.1:8000`) or the FastAPI app itself (in process,
    through Starlette's TestClient, no socket)."""
    import httpx

    if isinstance(target, str):
        return httpx.Client(base_url=target, timeout=30)
    from fastapi.testclient import TestClient

    return TestClient(target)


def add_raters(db_url: str, names: Iterable[str], role: str = "rater") -> dict[str, str]:
    """Make a user (role `rater`, no password login) and an API token for each name; returns name -> token.

    What an admin does on /admin/users and each rater on /tokens, in one transaction, audited the same way."""
    from sqlalchemy.orm import Session

    from posttrain.feedback import migrate
    from posttrain.feedback.db import ApiToken, Audit, User, make_engine
    from posttrain.feedback.security import new_token, token_hash

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    tokens: dict[str, str] = {}
    try:
        with Session(engine) as s, s.begin():
            for name in names:
                user = User(username=name, password_hash="!", role=role, active=True)  # "!" matches no password
                s.add(user)
                s.flush()
                tokens[name] = new_token("pt_")
                s.add(ApiToken(user_id=user.id, name="simulated", token_hash=token_hash(tokens[name])))
                s.add(Audit(action="user.create", target=f"user:{name}", detail={"role": role, "by": "simulate"}))
                s.add(Audit(user_id=user.id, action="token.create", target="token:simulated"))
    finally:
        engine.dispose()
    return tokens


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(db_url: str, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """`posttrain feedback serve`'s app on `db_url`, served by uvicorn in a background thread on a free port
    (or `port`); yields its base URL and stops the server when the block ends."""
    import uvicorn

    from posttrain.feedback.app import Settings, create_app

    port = port or free_port(host)
    app = create_app(Settings(db=db_url))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="feedback-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the feedback server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()
