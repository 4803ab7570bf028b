"""`posttrain eval` over several models and tasks (recipe tier, tiny models): every figure in results.json is
recomputed from samples.jsonl, the judges, pass@k from several samples, the reward model, --compare-to and
where the files go."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from posttrain.cli import main
from posttrain.eval import stats
from posttrain.eval.winrate import wilson_interval


def char_parity(prompt, completion: str) -> float:
    """A reward that splits the tiny models' (random) completions about evenly: 1 when the code points sum to even."""
    return float(sum(map(ord, completion)) % 2 == 0)


REWARD = f"{__name__}:char_parity"


def eval_cli(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out"
    assert main(["eval", *args, "--output-dir", str(out), "--no-progress", "--bootstrap-resamples", "200",
                 "--sampling.max-new-tokens", "12"]) == 0
    results = json.loads((out / "results.json").read_text())
    results["samples"] = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return results


def rows(results: dict, model: str, task: str) -> list[dict]:
    return [r for r in results["samples"] if r["model"] == model and r["task"] == task]


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(6)))
    return path


def test_two_models_on_two_tasks_every_figure_is_its_samples(tmp_path, prompts_file):
    heldout = "builtin:arithmetic/heldout"
    r = eval_cli(tmp_path, "--models", "tiny", "tiny-small", "--tasks", heldout, str(prompts_file), "--limit", "8",
                 "--reward", REWARD)
    assert r["format"] == "posttrain-eval/1" and [m["label"] for m in r["models"]] == ["tiny", "tiny-small"]
    assert [(t["name"], t["n"]) for t in r["tasks"]] == [(heldout, 8), (str(prompts_file), 6)]
    assert r["tasks"][1]["sha256"] == hashlib.sha256(prompts_file.read_bytes()).hexdigest()
    assert len(r["samples"]) == 2 * (8 + 6)
    for model in ("tiny", "tiny-small"):
        for task in (heldout, str(prompts_file)):
            mine = rows(r, model, task)
            assert [s["score"] for s in mine] == [char_parity(None, s["completion"]) for s in mine]
            assert [s["reason"] for s in mine] == [f"{__name__}:char_parity = {s['score']:.4g}" for s in mine]
            acc = next(f for f in r["accuracy"] if (f["model"], f["task"]) == (model, task))
            scores = [s["score"] for s in mine]
            assert acc["value"] == pytest.approx(np.mean(scores)) and acc["n"] == len(mine)
            assert (acc["ci_low"], acc["ci_high"]) == pytest.approx(wilson_interval(sum(scores), len(scores)))
            length = next(f for f in r["length"] if (f["model"], f["task"]) == (model, task))
            assert length["value"] == pytest.approx(np.mean([s["length"] for s in mine]))
            reasons = next(f["counts"] for f in r["finish_reasons"] if (f["model"], f["task"]) == (model, task))
            assert sum(reasons.values()) == len(mine)
    for w in r["win_rates"]:  # verifier judge: the higher score wins, equal scores tie
        a, b = rows(r, w["a"], w["task"]), rows(r, w["b"], w["task"])
        diff = np.sign(np.array([x["score"] for x in a]) - np.array([x["score"] for x in b]))
        assert (w["wins"], w["ties"], w["losses"]) == ((diff > 0).sum(), (diff == 0).sum(), (diff < 0).sum())
        assert w["value"] == pytest.approx((w["wins"] + 0.5 * w["ties"]) / w["n"])
        assert w["a_first_win_rate"] is None and w["b_first_win_rate"] is None  # a verifier sees no order
    assert len(r["win_rates"]) == 2 and len(r["ratings"]) == 2
    assert np.mean([x["rating"] for x in r["ratings"]]) == pytest.approx(1000.0)
    assert all(x["ci_low"] <= x["rating"] <= x["ci_high"] and x["rank"] in (1, 2) for x in r["ratings"])
    assert all((x["judge"], x["rated"]) == ("verifier", ["tiny", "tiny-small"]) for x in r["ratings"])


def test_pass_at_k_from_several_samples(tmp_path, prompts_file):
    r = eval_cli(tmp_path, "--model.name", "tiny", "--tasks", str(prompts_file), "--n-samples", "4",
                 "--sampling.temperature", "1.0", "--reward", REWARD)
    samples = rows(r, "tiny", str(prompts_file))
    assert len(samples) == 24 and sorted({s["sample_index"] for s in samples}) == [0, 1, 2, 3]
    correct = np.zeros(6, dtype=int)
    for s in samples:
        correct[s["prompt_index"]] += s["score"] == 1.0
    figures = {f["k"]: f for f in r["pass_at_k"]}
    assert sorted(figures) == [1, 2, 4]
    for k, f in figures.items():
        assert f["value"] == pytest.approx(stats.mean_pass_at_k(np.full(6, 4), correct, k))
        assert f["ci_low"] <= f["value"] <= f["ci_high"]
    assert figures[1]["value"] == pytest.approx(r["accuracy"][0]["value"])  # pass@1 is the mean score
    assert figures[1]["value"] <= figures[2]["value"] <= figures[4]["value"]


def never_right(prompt, completion: str) -> float:
    return 0.0


def test_pass_at_k_of_no_right_answer_has_wilsons_interval_not_none(tmp_path, prompts_file):
    """Every prompt's pass@k is 0: the bootstrap's resamples are all 0, but 6 prompts do not make 0% certain."""
    r = eval_cli(tmp_path, "--model.name", "tiny", "--tasks", str(prompts_file), "--n-samples", "2",
                 "--sampling.temperature", "1.0", "--reward", f"{__name__}:never_right")
    for f in r["pass_at_k"]:
        assert f["value"] == 0 and (f["ci_low"], f["ci_high"]) == pytest.approx(wilson_interval(0, 6))
        assert f["ci_high"] > 0.3


def test_a_rater_judges_both_orders(tmp_path):
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.tasks.arithmetic_raters import make_rater

    task = "builtin:arithmetic/heldout"
    r = eval_cli(tmp_path, "--models", "tiny", "tiny-small", "--limit", "6", "--judge", "rater:concise")
    (w,) = r["win_rates"]
    assert w["judge"] == "rater:concise" and w["n"] == 12 and w["prompts"] == 6  # each prompt shown in both orders
    rater, prompts = make_rater("concise"), load_records(task, accept=(Prompt,), limit=6)
    a, b = rows(r, "tiny", task), rows(r, "tiny-small", task)
    outcome = {"a": 1.0, "b": 0.0, "tie": 0.5}
    a_first = [outcome[rater.compare(p, x["completion"], y["completion"]).value] for p, x, y in zip(prompts, a, b)]
    b_first = [1 - outcome[rater.compare(p, y["completion"], x["completion"]).value] for p, x, y in zip(prompts, a, b)]
    assert w["a_first_win_rate"] == pytest.approx(np.mean(a_first))
    assert w["b_first_win_rate"] == pytest.approx(np.mean(b_first))
    assert w["value"] == pytest.approx(np.mean(a_first + b_first))


@pytest.fixture(scope="module")
def saved_rm(tiny_dir, tmp_path_factory):
    from posttrain.config import ModelConfig
    from posttrain.models.heads import load_reward_model, save_reward_model

    model, tokenizer = load_reward_model(ModelConfig(name=str(tiny_dir)), seed=5)
    return save_reward_model(model, tokenizer, tmp_path_factory.mktemp("rm") / "final",
                             {"kind": "bradley_terry", "pooling": "last_token"})


def test_reward_model_scores_and_judges(tmp_path, saved_rm):
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.rewards.model import RewardFunction

    task = "builtin:arithmetic/heldout"
    r = eval_cli(tmp_path, "--models", "tiny", "tiny-small", "--limit", "5", "--reward-model", str(saved_rm),
                 "--judge", "reward-model")
    reward, prompts = RewardFunction.load(saved_rm), load_records(task, accept=(Prompt,), limit=5)
    for model in ("tiny", "tiny-small"):
        mine = rows(r, model, task)
        expected = reward.score_batch(prompts, [s["completion"] for s in mine])
        assert [s["rm_score"] for s in mine] == pytest.approx(expected, abs=1e-4)
        (f,) = [f for f in r["rm_score"] if f["model"] == model]
        assert f["value"] == pytest.approx(np.mean(expected), abs=1e-4)
    (w,) = r["win_rates"]
    diff = np.sign([x["rm_score"] - y["rm_score"] for x, y in zip(rows(r, "tiny", task), rows(r, "tiny-small", task))])
    assert (w["wins"], w["losses"]) == ((diff > 0).sum(), (diff < 0).sum())
    from posttrain.data.load import file_sha256  # the reward model named by its weights, for --compare-to

    assert r["settings"]["reward_model_sha256"] == hashlib.sha256(
        file_sha256(saved_rm / "model.safetensors").encode()).hexdigest()


def test_compare_to_says_outside_noise_only_when_the_interval_excludes_zero(tmp_path, capsys):
    first = eval_cli(tmp_path / "one", "--model.name", "tiny", "--limit", "10", "--reward", REWARD)
    old = tmp_path / "one" / "out" / "results.json"
    capsys.readouterr()
    eval_cli(tmp_path / "two", "--model.name", "tiny", "--limit", "10", "--reward", REWARD, "--compare-to", str(old))
    out = capsys.readouterr().out
    assert "within noise" in out and "outside noise" not in out  # the same model, the same greedy answers
    doctored = json.loads(old.read_text())
    value = first["accuracy"][0]["value"]
    far = 0.0 if value > 0.5 else 1.0  # an old accuracy with a tight interval, far from the new one
    doctored["accuracy"][0].update(value=far, ci_low=max(0.0, far - 0.01), ci_high=min(1.0, far + 0.01))
    old.write_text(json.dumps(doctored))
    eval_cli(tmp_path / "three", "--model.name", "tiny", "--limit", "10", "--reward", REWARD, "--compare-to", str(old))
    assert "outside noise" in capsys.readouterr().out


def test_compare_to_pairs_one_new_model_with_one_old_and_skips_changed_task_data(tmp_path, capsys):
    """The docs' `--models runs/dpo/final --compare-to runs/sft/eval/results.json`: one model in each pairs them
    though their labels differ; a task evaluated on other prompts (another --limit) is named and not compared."""
    eval_cli(tmp_path / "one", "--model.name", "tiny", "--labels", "sft", "--limit", "10", "--reward", REWARD)
    old = tmp_path / "one" / "out" / "results.json"
    capsys.readouterr()
    eval_cli(tmp_path / "two", "--model.name", "tiny", "--labels", "dpo", "--limit", "10", "--reward", REWARD,
             "--compare-to", str(old))
    out = " ".join(capsys.readouterr().out.split())
    assert "comparing dpo with the earlier evaluation's sft" in out and "within noise" in out
    eval_cli(tmp_path / "three", "--model.name", "tiny", "--labels", "dpo", "--limit", "8", "--reward", REWARD,
             "--compare-to", str(old))
    out = " ".join(capsys.readouterr().out.split())
    assert "not compared (10 prompts then, 8 now: another --limit)" in out and "nothing to compare" in out
    assert "within noise" not in out


def test_one_model_of_a_run_writes_into_the_run_and_is_labelled_by_it(tmp_path, tiny_dir, monkeypatch, capsys):
    run = tmp_path / "runs" / "sft"
    shutil.copytree(tiny_dir, run / "final")
    (run / "lineage.json").write_text('{"base_model": "tiny"}\n')
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--model.name", "runs/sft/final", "--limit", "3", "--no-progress"]) == 0
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["models"] == [{"label": "sft", "name": "runs/sft/final", "lineage": {"base_model": "tiny"}}]
    assert results["win_rates"] == [] and results["ratings"] == []
    assert len((run / "eval" / "samples.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["eval", "--model.name", "runs/sft/final", "--limit", "2", "--no-progress"]) == 0  # again: said
    assert f"replacing {Path('runs/sft/eval/results.json')} (of " in capsys.readouterr().err


def test_many_answers_cut_at_max_new_tokens_are_warned_of(capsys):
    from posttrain.eval.suite import SuiteConfig, warn_cut_answers

    counts = [{"model": "sft", "task": "t", "counts": {"length": 3, "stop": 7}},
              {"model": "dpo", "task": "t", "counts": {"length": 1, "stop": 9}},
              {"model": "tiny", "task": "t", "counts": {"length": 10}}]  # random-init: never ends, not news
    warn_cut_answers(SuiteConfig(), counts, {"sft": "runs/sft/final", "dpo": "runs/dpo/final", "tiny": "tiny"})
    err = capsys.readouterr().err
    assert err == ("warning: 3 of 10 answers of sft on t stopped at --sampling.max-new-tokens 32 (finish reason "
                   "length); an answer cut short scores 0: raise it if they were still going\n")
