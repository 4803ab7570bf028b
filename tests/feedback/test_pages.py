"""The rater's edit pages (my recent judgments, edit = a new revision) over HTTP, and the form <-> payload
round trip the edit page starts from."""

import html
import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from posttrain.feedback.db import Judgment
from posttrain.feedback.export import export_rows
from posttrain.feedback.pages import answer_from_form, form_fields
from posttrain.feedback.tasks import read_answer

from .conftest import login


class Form(dict):
    """What the task page posts: a dict with the getlist of a multi-valued form (flags)."""

    def getlist(self, key: str) -> list:
        return list(self.get(key, []))


RUBRIC = [{"name": "helpful", "min": 1, "max": 5}, {"name": "correct", "min": 0, "max": 2}]
ANSWERS = {
    "pairwise": {"choice": "B", "flags": ["wrong"], "comment": "B adds up"},
    "ranking": {"order": [2, 0, 1], "flags": [], "comment": ""},
    "rubric": {"scores": [{"helpful": 2, "correct": 0}, {"helpful": 5, "correct": 2}, {"helpful": 1, "correct": 1}],
               "flags": ["unsafe", "off_topic"], "comment": "c"},
    "correction": {"response": 1, "text": "fixed", "flags": [], "comment": ""},
}


@pytest.mark.parametrize("task", sorted(ANSWERS))
def test_an_edit_page_starts_from_the_stored_answer(task):
    """payload -> form fields (display positions) -> answer -> payload gives the payload back, under a shuffle."""
    presentation = [1, 2] if task == "pairwise" else [2, 0, 1]
    payload = read_answer(task, ANSWERS[task], presentation, RUBRIC)
    fields = form_fields(task, payload, presentation)
    assert all(isinstance(v, (str, list)) for v in fields.values())
    again = answer_from_form(task, Form(fields), len(presentation), RUBRIC)
    assert read_answer(task, again, presentation, RUBRIC) == payload


def test_a_rater_edits_a_judgment_from_the_pages_and_the_old_one_stays(fb):
    c = TestClient(fb.app)
    csrf = login(c, "rater1")
    lease = c.get("/c/1/next", follow_redirects=False).headers["location"]
    r = c.post(lease, data={"choice": "A", "client_id": "first-vote", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    with fb.db() as s:
        (old,) = s.scalars(select(Judgment))
    mine = c.get("/mine").text
    assert f'href="/judgments/{old.id}/edit"' in mine and "A better" in mine and "What is" in mine
    page = c.get(f"/judgments/{old.id}/edit").text
    prefill = json.loads(html.unescape(re.search(r'data-prefill="([^"]+)"', page).group(1)))
    assert prefill["choice"] == "A" and 'id="skip"' not in page
    bad = c.post(f"/judgments/{old.id}/edit", data={"client_id": "edit-0", "csrf_token": csrf})
    assert bad.status_code == 422 and "choice must be one of" in bad.text
    r = c.post(f"/judgments/{old.id}/edit", data={"choice": "B", "comment": "second look", "client_id": "edit-1",
                                                   "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/mine?edited=")
    with fb.db() as s:
        rows = list(s.scalars(select(Judgment).order_by(Judgment.id)))
        exported, _ = export_rows(s, "c1")
    assert len(rows) == 2
    first, second = rows
    assert first.id == old.id and first.payload == old.payload and first.revision == 0  # kept as it was
    assert second.supersedes_id == old.id and second.revision == 1 and second.payload["choice"] == "B"
    assert second.payload["winner"] == second.presentation[1]
    assert [e["feedback"]["judgment"] for e in exported] == [second.id]
    mine = c.get(r.headers["location"]).text
    assert f"/judgments/{second.id}/edit" in mine and f"/judgments/{old.id}/edit" not in mine
    assert "B better" in mine and "Saved" in mine
    assert c.post(f"/judgments/{old.id}/edit", data={"choice": "A", "client_id": "edit-2",
                                                      "csrf_token": csrf}).status_code == 409
    other = TestClient(fb.app)
    login(other, "rater2")
    assert other.get(f"/judgments/{second.id}/edit").status_code == 404
    assert "No judgments yet" in other.get("/mine").text
