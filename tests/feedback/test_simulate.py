"""Simulated raters judge campaigns through the HTTP API (a real uvicorn server in a thread, or the app in
process), by their wrapped rater's preference, with a noise rate, never seeing which model wrote what."""

from __future__ import annotations

import pytest

from posttrain.data.load import load_records
from posttrain.data.records import Prompt
from posttrain.feedback.export import export_rows
from posttrain.feedback.simulate import SimulatedHttpRater, add_raters, client_for, reference_index, serve_in_thread
from posttrain.tasks.arithmetic_raters import make_rater
from posttrain.tasks.raters import Judgment, SimulatedRater

from .conftest import add_campaign


def arithmetic_items(n: int) -> tuple[list[Prompt], list[dict]]:
    """n arithmetic prompts, each with the right answer and a wrong one (answer + 1); the model that wrote the
    right one alternates, so neither model nor position goes with correctness."""
    prompts = load_records("builtin:arithmetic/heldout", accept=(Prompt,), limit=n)
    items = []
    for i, p in enumerate(prompts):
        right, wrong = p.reference["answer"], str(int(p.reference["answer"]) + 1)
        models = ("v1", "v2") if i % 2 else ("v2", "v1")
        items.append({"prompt": [m.to_dict() for m in p.prompt],
                      "responses": [{"text": right, "model": models[0]}, {"text": wrong, "model": models[1]}]})
    return prompts, items


def new_db(tmp_path, name: str = "feedback.db") -> tuple[str, object]:  # noqa: ANN001
    from sqlalchemy.orm import sessionmaker

    from posttrain.feedback import migrate
    from posttrain.feedback.db import make_engine

    url = f"sqlite:///{tmp_path}/{name}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    return url, sessionmaker(engine)


def chosen_correct(db, campaign: str, prompts: list[Prompt]) -> list[bool]:  # noqa: ANN001
    answers = {p.prompt[-1].content: p.reference["answer"] for p in prompts}
    with db() as s:
        rows, _ = export_rows(s, campaign)
    return [r["chosen"][0]["content"] == answers[r["prompt"][-1]["content"]] for r in rows]


def test_noiseless_raters_prefer_the_right_answer_through_a_live_server(tmp_path):
    """Two raters, overlap 2, 12 items: 24 judgments over real HTTP, every one choosing the correct answer."""
    prompts, items = arithmetic_items(12)
    url, db = new_db(tmp_path)
    add_campaign(db, "arith", items=items, overlap=2)
    tokens = add_raters(url, ["sim1", "sim2"])
    raters = [SimulatedHttpRater(make_rater("correctness"), tokens[n], seed=i, references=reference_index(prompts))
              for i, n in enumerate(tokens)]
    with serve_in_thread(url) as base:
        with client_for(base) as client:
            counts = [r.judge(client, "arith") for r in raters]
    assert [sum(c.values()) for c in counts] == [12, 12]
    correct = chosen_correct(db, "arith", prompts)
    assert len(correct) == 24 and all(correct)


def test_noise_one_answers_at_random_and_noise_is_reproducible(tmp_path):
    """noise 1.0: each answer a coin flip, so about half of 40 pick the right answer (binomial sd ~3.2; the
    bounds are 4 sd wide); the same seed on a fresh database gives the same answers, another seed others."""
    prompts, items = arithmetic_items(40)

    def run(seed: int, noise: float, name: str) -> list[bool]:
        url, db = new_db(tmp_path, name)
        add_campaign(db, "arith", items=items)
        token = add_raters(url, ["sim"])["sim"]
        from posttrain.feedback.app import Settings, create_app

        with client_for(create_app(Settings(db=url))) as client:
            SimulatedHttpRater(make_rater("correctness"), token, noise=noise, seed=seed,
                               references=reference_index(prompts)).judge(client, "arith")
        return chosen_correct(db, "arith", prompts)

    first = run(3, 1.0, "a.db")
    assert len(first) == 40 and 7 <= sum(first) <= 33
    assert run(3, 1.0, "b.db") == first
    assert run(4, 1.0, "c.db") != first
    some = run(3, 0.3, "d.db")
    assert 40 - 25 <= sum(some) < 40  # ~30% random, half of those wrong: ~6 wrong of 40


def test_raters_see_only_prompt_and_texts_never_the_models(fb):
    """The wrapped rater is handed exactly the shown texts; no model name reaches it."""
    seen: list[tuple[str, ...]] = []

    class Spy:
        name = "spy"

        def compare(self, prompt, a, b):  # noqa: ANN001, ANN202
            seen.append((prompt.text, a, b))
            return Judgment.A

        def rank(self, prompt, responses):  # noqa: ANN001, ANN202
            raise AssertionError("a pairwise campaign asks for compare")

    token = add_raters(fb.url, ["spy"])["spy"]
    with client_for(fb.app) as client:
        counts = SimulatedHttpRater(Spy(), token).judge(client, "c1")
    assert sum(counts.values()) == 3 and len(seen) == 3
    assert not any("model-" in text for row in seen for text in row)
    assert {frozenset(row[1:]) for row in seen} == {frozenset({f"{2 * i}", f"{2 * i + 1}"}) for i in range(3)}


def test_ranking_by_the_concise_rater_and_a_limit(fb):
    """Ranking: right and terse > right and padded > wrong (concise utility: 10, 10 - 1.15, 0), in the
    exported order, whatever order each rater saw; `limit` stops after that many answers."""
    from posttrain.feedback.app import Settings, create_app

    prompts = load_records("builtin:arithmetic/heldout", accept=(Prompt,), limit=3)
    items = [{"prompt": [m.to_dict() for m in p.prompt],
              "responses": [{"text": f"The answer is {p.reference['answer']}.", "model": "v1"},
                            {"text": str(int(p.reference["answer"]) - 1), "model": "v2"},
                            {"text": p.reference["answer"], "model": "v3"}]} for p in prompts]
    add_campaign(fb.db, "rank", task="ranking", items=items, overlap=2)
    tokens = add_raters(fb.url, ["a", "b"])
    app = create_app(Settings(db=fb.url))
    with client_for(app) as client:
        first = SimulatedHttpRater(make_rater("concise"), tokens["a"], references=reference_index(prompts))
        assert first.judge(client, "rank", limit=2) == {"ranked": 2}
        assert first.judge(client, "rank") == {"ranked": 1}
        SimulatedHttpRater(make_rater("concise"), tokens["b"], seed=1,
                           references=reference_index(prompts)).judge(client, "rank")
    with fb.db() as s:
        rows, _ = export_rows(s, "rank")
    assert len(rows) == 6 and all(r["order"] == [2, 0, 1] for r in rows)


def test_a_ranking_the_rater_cannot_tell_apart_is_skipped(fb):
    """A rater whose utility is the same for every response has no ranking (`rank` is None): it skips."""
    add_campaign(fb.db, "blind", task="ranking", items=[
        {"prompt": [{"role": "user", "content": "What is 1 + 1?"}],
         "responses": [{"text": t, "model": t} for t in ("2", "3", "4")]}])
    token = add_raters(fb.url, ["blind"])["blind"]
    flat = SimulatedRater("flat", lambda prompt, response: 0.0)
    with client_for(fb.app) as client:
        assert SimulatedHttpRater(flat, token).judge(client, "blind") == {"skipped": 1}
        assert SimulatedHttpRater(flat, token).judge(client, "blind") == {}  # a skipped item is not offered again


def test_unknown_campaign_and_bad_noise(fb):
    token = add_raters(fb.url, ["x"])["x"]
    with client_for(fb.app) as client, pytest.raises(LookupError, match="no campaign named 'nope'"):
        SimulatedHttpRater(make_rater("correctness"), token).judge(client, "nope")
    with pytest.raises(ValueError, match="noise"):
        SimulatedHttpRater(make_rater("correctness"), token, noise=1.5)


def test_an_arithmetic_rater_without_the_reference_answers_says_how_to_give_them():
    """The API sends the prompt's text only; the arithmetic raters need its answer: one line naming `references=`
    (it was the numeric reward's 'has no "answer" field', with no hint of where the answer could come from)."""
    from posttrain.errors import DataError

    (prompt,) = load_records("builtin:arithmetic/heldout", accept=(Prompt,), limit=1)
    messages = [{"role": "user", "content": prompt.text}]
    blind = SimulatedHttpRater(make_rater("concise"), "token")
    with pytest.raises(DataError, match=r"simulated rater 'concise': .*references=reference_index\(prompts\)"):
        blind.answer("pairwise", messages, ["1", "2"])
    told = SimulatedHttpRater(make_rater("concise"), "token", references=reference_index([prompt]))
    assert told.answer("pairwise", messages, [prompt.reference["answer"], "-1"]) == {"choice": "A"}
