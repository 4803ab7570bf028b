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


def _upload(client, csrf, name: str, body: bytes, filename: str = "items.jsonl", **fields):  # noqa: ANN001, ANN202
    data = {"csrf_token": csrf, "name": name, "task": "pairwise", "overlap": "2", "lease_seconds": "600",
            "guidelines": "Be **fair**.", "rubric": "", **fields}
    return client.post("/manage/upload", data=data, files={"items": (filename, body, "application/jsonl")},
                       follow_redirects=False)


def test_a_manager_uploads_a_campaign_file_and_errors_name_file_line_and_field(fb):
    from posttrain.feedback.db import Campaign, Item

    c = TestClient(fb.app)
    csrf = login(c, "manager")
    assert 'enctype="multipart/form-data"' in c.get("/manage/upload").text
    lines = [{"prompt": "2+2?", "completion": "4", "model": "v1"}, {"prompt": "2+2?", "completion": "5", "model": "v2"},
             {"prompt": "3+3?", "responses": ["6", "7"], "models": ["v1", "v2"]}]
    body = "".join(json.dumps(x) + "\n" for x in lines).encode()
    r = _upload(c, csrf, "uploaded", body)
    assert r.status_code == 303 and r.headers["location"].startswith("/manage?created=")
    with fb.db() as s:
        camp = s.scalar(select(Campaign).where(Campaign.name == "uploaded"))
        items = list(s.scalars(select(Item).where(Item.campaign_id == camp.id).order_by(Item.position)))
    assert camp.overlap == 2 and camp.lease_seconds == 600 and camp.guidelines == "Be **fair**."
    assert [[r["model"] for r in i.responses] for i in items] == [["v1", "v2"], ["v1", "v2"]]
    assert "created" in c.get(r.headers["location"]).text

    bad = body + b'{"prompt": "4+4?", "responses": "8"}\n'
    r = _upload(c, csrf, "broken", bad, filename="../../etc/rows.jsonl")
    errors = re.findall(r'id="upload-error">([^<]*)<', r.text)
    assert r.status_code == 422 and errors == ["rows.jsonl:4: responses must be a list, and models (if given) as long"]
    assert 'value="broken"' in r.text  # the form keeps what was typed
    for body_, fields, expected in (
            (b'{"prompt": "q"}\n', {}, "items.jsonl:1: responses: missing"),
            (b'{"prompt": "q", "responses": ["a", "b", "c"]}\n', {}, "items.jsonl:1: responses: pairwise items need"),
            (b'not json\n', {}, "items.jsonl:1: not JSON"),
            (b'\xff\xfe', {}, "items.jsonl: byte 0: not UTF-8"),
            (body, {"overlap": "two"}, "overlap: must be a whole number"),
            (body, {"task": "rubric", "rubric": "[{"}, "rubric: not JSON"),
            (body, {"task": "rubric", "rubric": '[{"name": "helpful", "min": 5, "max": 1}]'}, "rubric: rubric scale"),
            (body, {"task": "rubric"}, "rubric: a rubric campaign needs scales"),
            (body, {"task": "poll"}, "task: 'poll' is not one of pairwise, ranking, rubric, correction"),
            (body, {"name": "uploaded"}, "a campaign named 'uploaded' exists already")):
        r = _upload(c, csrf, fields.pop("name", "again"), body_, **fields)
        assert r.status_code == 422 and expected in html.unescape(r.text), (expected, r.text[-800:])
    with fb.db() as s:
        assert s.scalar(select(Campaign).where(Campaign.name == "again")) is None  # nothing half-made

    assert _upload(c, "forged", "nocsrf", body).status_code == 403
    fb.app.state.settings.upload_limit_mb = 0.1
    big = body * (2**18 // len(body))  # 256 KiB: refused by its Content-Length, before the form is read
    r = _upload(c, csrf, "big", big)
    assert r.status_code == 413 and "over 0.1 MB" in r.text
    r = _upload(c, csrf, "big", body * (110_000 // len(body)))  # within the allowance, over the limit once read
    assert r.status_code == 413 and "items.jsonl: over 0.1 MB" in r.text
    with fb.db() as s:
        assert s.scalar(select(Campaign).where(Campaign.name.in_(["nocsrf", "big"]))) is None


@pytest.mark.parametrize("ranks, message", [
    ({"rank-0": "1", "rank-1": "1", "rank-2": ""}, "give every response a rank: C has none yet"),
    ({"rank-0": "2", "rank-1": "", "rank-2": ""}, "give every response a rank: B and C have none yet"),
    ({"rank-0": "1", "rank-1": "1", "rank-2": "3"}, "each rank once: A and B both have rank 1; give each response a "
                                                    "different rank 1..3"),
    ({"rank-0": "1", "rank-1": "2", "rank-2": "4"}, "give each response a different rank 1..3"),
])
def test_a_ranking_refusal_names_the_responses_as_the_page_labels_them(ranks, message):
    """A teacher gave A and B rank 1 and C none: the page said only 'give every response a rank'."""
    from posttrain.feedback.tasks import AnswerError

    with pytest.raises(AnswerError) as e:
        answer_from_form("ranking", Form(ranks), 3, [])
    assert str(e.value) == message


def test_a_late_answer_is_said_in_a_raters_words_with_what_they_wrote_and_the_next_task(fb):
    """The task's time ran out and another rater was given it: the page (not a bare 409 of internal words) says
    the answer was not stored and why, shows the comment typed to copy, and links to the next task; a stored
    answer is followed by "Your last answer was saved" on the next task. The task page says how long it has."""
    c = TestClient(fb.app)
    csrf = login(c, "rater1")
    task_url = c.get("/c/1/next", follow_redirects=False).headers["location"]
    page = c.get(task_url).text
    assert 'id="time-left"' in page and "min to answer" in page and 'dir="auto"' in page
    lease_id = int(task_url.rsplit("/", 1)[1])
    with fb.db() as s, s.begin():  # its time ran out and another rater took its slot: the take-over deletes it
        from posttrain.feedback.db import Lease

        s.delete(s.get(Lease, lease_id))
    r = c.post(task_url, data={"choice": "A", "comment": "B forgot the carry", "client_id": "late-answer-1",
                               "campaign": "1", "csrf_token": csrf})
    assert r.status_code == 409 and "This answer was not stored" in r.text and "given to another rater" in r.text
    assert "B forgot the carry" in r.text and 'href="/c/1/next"' in r.text
    assert "no longer yours, or never was" not in r.text
    with fb.db() as s:
        assert s.scalars(select(Judgment).where(Judgment.client_id == "late-answer-1")).first() is None
    answered = c.post(c.get("/c/1/next", follow_redirects=False).headers["location"],
                      data={"choice": "B", "client_id": "in-time-1", "campaign": "1", "csrf_token": csrf})
    assert answered.status_code == 200 and "Your last answer was saved." in answered.text
