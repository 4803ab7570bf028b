"""The rater's pages in headless Chromium (Debian's, via Playwright): log in, judge with the keyboard, reload
mid-task and keep the draft, skip, finish a campaign; XSS stays inert; a rater cannot reach others' tasks or the
admin pages; no page trips the Content-Security-Policy. With POSTTRAIN_SCREENSHOTS=1 the screenshots are saved
into docs/img/ (the docs page shows them); otherwise into the test's temporary folder."""

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from posttrain.feedback.db import Judgment, Lease, Skip

from .conftest import PASSWORD, ThreadServer, add_campaign, add_users, pairwise_items

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
XSS = '<script>window.__xss = 1; alert("xss")</script><img src=x onerror="window.__xss = 2">'
GUIDE = ("## How to judge\n\nPick the response that answers **correctly**; if both are right, the clearer one.\n\n"
         "- *Tie*: equally good\n- *Both bad*: neither answers the question")


@pytest.fixture
def live(tmp_path):
    from posttrain.feedback.app import Settings, create_app

    app = create_app(Settings(db=f"sqlite:///{tmp_path}/browser.db"))
    users = add_users(app.state.db, {"admin": "admin", "rater1": "rater", "rater2": "rater"})
    add_campaign(app.state.db, "arithmetic", items=pairwise_items(3), overlap=1, guidelines=GUIDE)
    add_campaign(app.state.db, "xss", items=pairwise_items(1, XSS), overlap=2)
    server = ThreadServer(app)
    yield server, app, users
    server.stop()


@pytest.fixture
def shots(tmp_path) -> Path:
    return DOCS_IMG if os.environ.get("POSTTRAIN_SCREENSHOTS") else tmp_path


def watch(page) -> list[str]:  # noqa: ANN001
    """Collect CSP violations and dialogs: either means something ran or was blocked that should not be there."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("dialog", lambda d: (seen.append(f"dialog: {d.message}"), d.dismiss()))
    return seen


def log_in(page, url: str, name: str) -> None:  # noqa: ANN001
    page.goto(url + "/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")


def test_judge_with_the_keyboard_keep_the_draft_skip_and_finish(live, page, shots):
    server, app, users = live
    seen = watch(page)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(server.url + "/login")
    page.screenshot(path=str(shots / "feedback-login.png"))
    log_in(page, server.url, "rater1")
    page.screenshot(path=str(shots / "feedback-home.png"))
    page.click("text=start >> nth=0")
    page.wait_for_selector("#task-form")
    assert "arithmetic · 0 done, 3 to go, this one included" in " ".join(page.inner_text("#progress").split())
    # the first task of a campaign opens with its guidelines; ? hides and shows them
    assert page.is_visible("#guidelines") and "correctly" in page.inner_text("#guidelines")
    page.keyboard.press("?")
    assert not page.is_visible("#guidelines")
    page.keyboard.press("1")
    assert page.is_checked("input[name=choice][value=A]")
    page.fill("textarea[name=comment]", "A is right")
    page.check("input[name=flags][value=wrong]")
    first_url = page.url
    page.reload()  # mid-task: the draft (choice, comment, flag) comes back from localStorage
    assert page.url == first_url
    assert page.is_checked("input[name=choice][value=A]")
    assert page.input_value("textarea[name=comment]") == "A is right"
    assert page.is_checked("input[name=flags][value=wrong]")
    assert page.is_visible("#guidelines")  # still the first task: open again
    page.screenshot(path=str(shots / "feedback-task.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda u: u != first_url)
    second_url = page.url
    assert not page.is_visible("#guidelines")  # read once: closed from the second task on
    page.keyboard.press("s")  # skip, through htmx (CSRF header from hx-headers) and its HX-Redirect
    page.wait_for_url(lambda u: u != second_url)
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    page.wait_for_selector("#done")
    assert seen == [], seen
    with app.state.db() as s:
        judgments = list(s.scalars(select(Judgment).order_by(Judgment.id)))
        skips = list(s.scalars(select(Skip)))
        first_lease = s.get(Lease, int(first_url.rsplit("/", 1)[1]))
    assert [j.payload["choice"] for j in judgments] == ["A", "both_bad"] and len(skips) == 1
    assert judgments[0].payload["winner"] == first_lease.presentation[0]  # A is what was shown first
    assert judgments[0].payload["comment"] == "A is right" and judgments[0].payload["flags"] == ["wrong"]
    assert judgments[0].seconds is not None and judgments[0].seconds > 0
    # a manager's view, for the docs
    page.context.clear_cookies()
    log_in(page, server.url, "admin")
    page.goto(server.url + "/manage")
    assert "2 / 3" in page.inner_text("table") and "built-in" not in page.inner_text("table")
    page.screenshot(path=str(shots / "feedback-manage.png"))


def test_a_script_in_a_model_response_stays_inert(live, page):
    server, _app, _ = live
    seen = watch(page)
    log_in(page, server.url, "rater1")
    page.goto(server.url + "/c/2/next")
    page.wait_for_selector("#task-form")
    assert page.evaluate("window.__xss") is None
    assert "<script>window.__xss = 1" in page.inner_text("#task-form")  # shown as text
    assert page.locator(".response img").count() == 0
    assert not [s for s in seen if s.startswith("dialog")], seen


def test_a_long_response_scrolls_in_its_box_and_leaves_the_answer_in_reach(tmp_path, page):
    from posttrain.feedback.app import Settings, create_app

    app = create_app(Settings(db=f"sqlite:///{tmp_path}/long.db"))
    add_users(app.state.db, {"rater1": "rater"})
    add_campaign(app.state.db, "long", items=pairwise_items(1, "A long answer. " * 400), overlap=1)
    server = ThreadServer(app)
    try:
        page.set_viewport_size({"width": 1280, "height": 900})
        log_in(page, server.url, "rater1")
        page.goto(server.url + "/c/1/next")
        page.wait_for_selector("#task-form")
        box = page.evaluate("[...document.querySelectorAll('.response-text')].map(e => "
                            "[e.clientHeight, e.scrollHeight])")
        assert any(scroll > client for client, scroll in box) and all(client <= 0.6 * 900 + 1 for client, _ in box)
        assert page.locator("#task-form button[type=submit]").bounding_box()["y"] < 2 * 900
    finally:
        server.stop()


def test_the_markdown_view_formats_responses_safely_and_is_remembered(tmp_path, page):
    """`m` (or the button) shows the responses as Markdown, sanitised: no script, no image, links as text only;
    the choice holds across tasks and reloads, and `m` again shows the exact text."""
    from posttrain.feedback.app import Settings, create_app

    text = "**Four**, since 2 + 2 = 4.\n\n- [see here](http://example.org)\n\n`code`\n\n" + XSS
    app = create_app(Settings(db=f"sqlite:///{tmp_path}/md.db"))
    add_users(app.state.db, {"rater1": "rater"})
    add_campaign(app.state.db, "md", items=pairwise_items(2, text), overlap=1)
    add_campaign(app.state.db, "short", items=pairwise_items(1), overlap=1, lease_seconds=60)
    server = ThreadServer(app)
    try:
        seen = watch(page)
        log_in(page, server.url, "rater1")
        page.goto(server.url + "/c/1/next")
        page.wait_for_selector("#task-form")
        first = page.locator(".response").nth(0) if "Four" in page.inner_text(".response >> nth=0") \
            else page.locator(".response").nth(1)
        assert "**Four**" in first.locator(".response-text").inner_text()  # the exact text first
        assert not first.locator(".response-md").is_visible()
        # the plain text holds Markdown: a hint says so, and the button says what it will show
        assert page.is_visible("#md-hint") and page.inner_text("#md-toggle .md-label") == "show formatted"
        assert "min to answer" in page.inner_text("#time-left")
        page.keyboard.press("m")
        md = first.locator(".response-md")
        assert md.is_visible() and not first.locator(".response-text").is_visible()
        assert not page.is_visible("#md-hint") and page.inner_text("#md-toggle .md-label") == "show plain text"
        assert md.locator("strong").inner_text() == "Four" and md.locator("li").inner_text() == "see here"
        assert md.locator("a, script, img").count() == 0 and md.locator("code").count() == 1
        page.reload()
        page.wait_for_selector("#task-form")
        assert first.locator(".response-md").is_visible()  # remembered
        page.click("#md-toggle")
        assert first.locator(".response-text").is_visible() and not first.locator(".response-md").is_visible()
        assert page.evaluate("window.__xss") is None and not [x for x in seen if x.startswith("dialog")], seen
        page.goto(server.url + "/c/2/next")  # a task of one minute: the warning is there from the start
        page.wait_for_selector("#task-form")
        assert "1 min left: answer soon" in page.inner_text("#time-left")
        assert "warn" in page.get_attribute("#time-left", "class")
    finally:
        server.stop()


def test_a_rater_cannot_open_another_raters_task_or_the_admin_pages(live, browser):
    server, _app, _ = live
    one, two = browser.new_context(), browser.new_context()
    try:
        p1, p2 = one.new_page(), two.new_page()
        log_in(p1, server.url, "rater1")
        p1.goto(server.url + "/c/1/next")
        p1.wait_for_selector("#task-form")
        log_in(p2, server.url, "rater2")
        r = p2.goto(p1.url)
        assert r.status == 404 and "no such task of yours" in p2.content()
        for path in ("/admin/users", "/admin/audit", "/manage"):
            assert p2.goto(server.url + path).status == 403
    finally:
        one.close()
        two.close()


def test_one_task_answered_otherwise_in_a_second_tab_is_refused_with_the_first_kept(live, page):
    """Two tabs of one task share its draft, and so its client id: the second tab's other answer is not a
    resend. It is refused with a page that says so and links to editing the kept answer; nothing is lost
    silently, nothing stored twice."""
    server, app, _ = live
    log_in(page, server.url, "rater1")
    page.goto(server.url + "/c/1/next")
    page.wait_for_selector("#task-form")
    second = page.context.new_page()
    second.goto(page.url)
    second.wait_for_selector("#task-form")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda u: "/task/" in u and u != second.url)
    second.keyboard.press("2")
    second.keyboard.press("Enter")
    second.wait_for_selector("text=already answered otherwise")
    with app.state.db() as s:
        judgments = list(s.scalars(select(Judgment)))
    assert [j.payload["choice"] for j in judgments] == ["A"]
    second.click("text=edit the answer that was kept")
    second.wait_for_selector("#task-form")
    assert second.url.endswith(f"/judgments/{judgments[0].id}/edit")
    assert second.is_checked("input[name=choice][value=A]")


def k_items(n: int, k: int) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Name a number near {i}."}],
             "responses": [{"text": f"answer {i}.{r}", "model": f"model-{r}"} for r in range(k)]} for i in range(n)]


RUBRIC = [{"name": "helpful", "min": 1, "max": 5}, {"name": "correct", "min": 1, "max": 3}]


@pytest.fixture
def live_tasks(tmp_path):
    """One campaign of each of the other task types (2 items each, overlap 1) and a rater."""
    from posttrain.feedback.app import Settings, create_app

    app = create_app(Settings(db=f"sqlite:///{tmp_path}/tasks.db"))
    add_users(app.state.db, {"rater1": "rater", "manager": "manager"})
    ids = {"ranking": add_campaign(app.state.db, "rank3", "ranking", items=k_items(2, 3), guidelines=GUIDE),
           "rubric": add_campaign(app.state.db, "rubric", "rubric", items=k_items(2, 2), rubric=RUBRIC),
           "correction": add_campaign(app.state.db, "fixit", "correction", items=k_items(2, 2)),
           "pairwise": add_campaign(app.state.db, "pairs", items=pairwise_items(2))}
    server = ThreadServer(app)
    yield server, app, ids
    server.stop()


def start(page, server, campaign_id: int) -> str:  # noqa: ANN001
    page.goto(f"{server.url}/c/{campaign_id}/next")
    page.wait_for_selector("#task-form")
    return page.url


def submitted(page, url: str, key: str = "Enter") -> None:  # noqa: ANN001
    page.keyboard.press(key)
    page.wait_for_url(lambda u: u != url)


def judgments_of(app, campaign_id: int) -> list:  # noqa: ANN001
    with app.state.db() as s:
        return list(s.scalars(select(Judgment).where(Judgment.campaign_id == campaign_id).order_by(Judgment.id)))


def test_ranking_by_keyboard_with_undo_and_a_draft_across_reload(live_tasks, page, shots):
    server, app, ids = live_tasks
    seen = watch(page)
    log_in(page, server.url, "rater1")
    url = start(page, server, ids["ranking"])
    for key in ("3", "1", "Backspace", "2"):  # C first, then A (taken back), then B
        page.keyboard.press(key)
    assert page.inner_text("#rank-order") == "C > B"
    page.reload()  # the two ranks come back from the draft
    assert page.url == url and page.inner_text("#rank-order") == "C > B"
    page.keyboard.press("Enter")  # A has no rank: the server sends the form back, and the draft stays
    page.wait_for_selector(".error")
    assert "rank" in page.inner_text(".error") and page.inner_text("#rank-order") == "C > B"
    page.keyboard.press("1")
    assert page.inner_text("#rank-order") == "C > B > A"
    assert page.is_visible("#guidelines") and "Backspace" in page.inner_text("#guidelines")  # open on a first task
    page.screenshot(path=str(shots / "feedback-ranking.png"), full_page=True)
    submitted(page, url)
    url = page.url
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    submitted(page, url)
    page.wait_for_selector("#done")
    assert page.evaluate("Object.keys(localStorage)") == []  # each draft went once the server took it
    first, second = judgments_of(app, ids["ranking"])
    assert first.payload["order"] == [first.presentation[p] for p in (2, 1, 0)]  # shown C, B, A: best first
    assert second.payload["order"] == second.presentation
    assert seen == [], seen


def test_rubric_by_keyboard_digits_and_arrows_and_a_draft_across_reload(live_tasks, page, shots):
    server, app, ids = live_tasks
    seen = watch(page)
    log_in(page, server.url, "rater1")
    url = start(page, server, ids["rubric"])
    name = "input[name=score-{}-{}]".format
    for key in ("4", "9", "2"):  # A helpful 4, A correct: 9 is off its 1..3 scale and ignored, then 2
        page.keyboard.press(key)
    assert page.input_value(name(0, "helpful")) == "4" and page.input_value(name(0, "correct")) == "2"
    assert page.evaluate("document.activeElement.name") == "score-1-helpful"  # moved on to B
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.name") == "score-0-correct"
    page.keyboard.press("3")
    page.reload()
    assert page.url == url and page.input_value(name(0, "correct")) == "3"
    page.keyboard.press("5")  # after a reload the first unscored scale (B helpful) has the focus
    page.keyboard.press("1")
    assert page.input_value(name(1, "helpful")) == "5" and page.input_value(name(1, "correct")) == "1"
    page.screenshot(path=str(shots / "feedback-rubric.png"), full_page=True)
    submitted(page, url)
    url = page.url
    for key in ("1", "1", "2", "2"):
        page.keyboard.press(key)
    submitted(page, url)
    page.wait_for_selector("#done")
    first, second = judgments_of(app, ids["rubric"])
    a, b = first.presentation
    assert first.payload["scores"][a] == {"helpful": 4, "correct": 3}
    assert first.payload["scores"][b] == {"helpful": 5, "correct": 1}
    assert second.payload["scores"][second.presentation[1]] == {"helpful": 2, "correct": 2}
    assert seen == [], seen


def test_correction_by_keyboard_ctrl_enter_and_a_draft_across_reload(live_tasks, page, shots):
    server, app, ids = live_tasks
    seen = watch(page)
    log_in(page, server.url, "rater1")
    url = start(page, server, ids["correction"])
    shown_b = page.inner_text("#text-1")
    page.keyboard.press("2")  # correct B: its text is copied into the box
    assert page.input_value("#correction") == shown_b
    page.click("#correction")
    page.keyboard.press("End")
    page.keyboard.type(" (fixed)")
    page.keyboard.press("Enter")  # a new line in the box, not a submit
    assert page.url == url and page.input_value("#correction") == shown_b + " (fixed)\n"
    page.keyboard.press("Backspace")
    page.reload()
    assert page.input_value("#correction") == shown_b + " (fixed)"
    assert page.is_checked("input[name=response][value='1']")
    page.screenshot(path=str(shots / "feedback-correction.png"), full_page=True)
    page.click("#correction")
    submitted(page, url, "Control+Enter")
    url = page.url
    page.keyboard.press("s")
    page.wait_for_selector("#done")
    (only,) = judgments_of(app, ids["correction"])
    assert only.payload == {"response": only.presentation[1], "text": shown_b + " (fixed)", "flags": [],
                            "comment": ""}
    assert seen == [], seen


def test_a_tablet_shows_every_task_without_sideways_scrolling_and_takes_taps(live_tasks, browser, shots):
    """768 x 1024 with touch: each task type's page fits the width, its buttons are on screen and a tap works."""
    server, app, ids = live_tasks
    context = browser.new_context(viewport={"width": 768, "height": 1024}, has_touch=True, is_mobile=True)
    try:
        page = context.new_page()
        log_in(page, server.url, "rater1")
        for task in ("pairwise", "ranking", "rubric", "correction"):
            start(page, server, ids[task])
            widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert widths[0] <= widths[1], (task, widths)
            for sel in ("#submit", "#skip", ".response"):
                box = page.locator(sel).first.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= 768, (task, sel, box)
        page.goto(f"{server.url}/c/{ids['pairwise']}/next")
        url = page.url
        page.locator("input[name=choice][value=B]").tap()
        assert page.is_checked("input[name=choice][value=B]")
        page.screenshot(path=str(shots / "feedback-tablet.png"))
        page.locator("#submit").tap()
        page.wait_for_url(lambda u: u != url)
        (j,) = judgments_of(app, ids["pairwise"])
        assert j.payload["choice"] == "B"
    finally:
        context.close()


def test_edit_a_judgment_from_my_judgments_and_upload_a_campaign(live_tasks, page, tmp_path, shots):
    """A rater edits from 'my judgments' (the form starts from the stored answer); a manager uploads an item
    file through the page, sees the line-and-field error, then uploads a good one."""
    server, app, ids = live_tasks
    seen = watch(page)
    log_in(page, server.url, "rater1")
    url = start(page, server, ids["pairwise"])
    page.keyboard.press("1")
    submitted(page, url)
    page.goto(server.url + "/mine")
    (old,) = judgments_of(app, ids["pairwise"])
    page.click(f"a[href='/judgments/{old.id}/edit']")
    page.wait_for_selector("#task-form")
    assert page.is_checked("input[name=choice][value=A]")  # the stored answer
    page.keyboard.press("2")
    page.screenshot(path=str(shots / "feedback-edit.png"), full_page=True)
    edit_url = page.url
    submitted(page, edit_url)
    assert "Saved" in page.inner_text("main") and "B better" in page.inner_text("#mine")
    page.screenshot(path=str(shots / "feedback-mine.png"))
    first, second = judgments_of(app, ids["pairwise"])
    assert first.payload["choice"] == "A" and second.payload["choice"] == "B" and second.supersedes_id == first.id

    page.context.clear_cookies()
    log_in(page, server.url, "manager")
    page.goto(server.url + "/manage/upload")
    bad = tmp_path / "tutor-items.jsonl"
    bad.write_text('{"prompt": "2+2?", "responses": ["4", "5"]}\n{"prompt": "3+3?", "response": ["6", "7"]}\n')
    page.fill("input[name=name]", "tutor-v2")
    page.set_input_files("input[name=items]", str(bad))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-error")
    assert page.inner_text("#upload-error").startswith("tutor-items.jsonl:2: responses: missing")
    page.screenshot(path=str(shots / "feedback-upload.png"), full_page=True)
    bad.write_text('{"prompt": "2+2?", "responses": ["4", "5"]}\n{"prompt": "3+3?", "responses": ["6", "7"]}\n')
    page.set_input_files("input[name=items]", str(bad))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#created")
    assert "tutor-v2" in page.inner_text("table")
    assert seen == [], seen
