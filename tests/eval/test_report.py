"""`posttrain report` and the model cards: figure grouping and escaping (math tier), bad input, the card's front
matter, and the report of a real short SFT run opened from disk in headless Chromium (every plot has data, the
tables are there, a hostile completion stays inert text)."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from posttrain.cli import main
from posttrain.errors import UserError
from posttrain.eval.figures import checked_svg, curves_svg, group_of, metric_groups, plain_label, series, thin
from posttrain.eval.report import Evaluation, load_inputs, render_report, side_by_side

HOSTILE = '<script>window.__x=1</script><img src=x onerror="window.__y=1">'
SVG_NS = "{http://www.w3.org/2000/svg}"


# -- figures: grouping, series, escaping -----------------------------------------------------------


def test_metrics_are_grouped_into_figures_by_what_they_measure():
    """Train and held-out versions of a metric share a figure; the reward statistics of DPO (TRL's names, no
    split prefix) and of a reward model share one; each throughput is alone (tokens/s and pairs/s differ by
    ~50x); counters and one-off totals get none; an unknown metric gets a figure of its own."""
    names = ["step", "train/loss", "eval/loss", "eval/nll_loss", "train/lr", "train/grad_norm", "train/epoch",
             "rewards/chosen", "eval/rewards/margins", "rewards/accuracies", "eval/accuracy", "train/margin",
             "logps/chosen", "train/kl", "perf/tokens_per_second", "perf/pairs_per_second", "time/train_seconds",
             "train/pairs_per_group", "train/entropy"]
    assert metric_groups(names) == {
        "Loss": ["train/loss", "eval/loss", "eval/nll_loss"],
        "Accuracy": ["rewards/accuracies", "eval/accuracy"],
        "KL": ["train/kl"],
        "Reward": ["train/margin", "rewards/chosen", "eval/rewards/margins"],
        "Log-probabilities": ["logps/chosen"],
        "Learning rate": ["train/lr"],
        "Gradient norm": ["train/grad_norm"],
        "Throughput: pairs per second": ["perf/pairs_per_second"],
        "Throughput: tokens per second": ["perf/tokens_per_second"],
        "entropy": ["train/entropy"],
    }
    # "kl" only as a word of its own: a metric named "weekly" is not a divergence
    assert group_of("train/weekly") == "weekly" and group_of("objective/kl_penalty") == "KL"


def test_series_keeps_finite_numbers_in_step_order():
    """Rows out of order, a NaN, an infinity, a string and a missing value: only steps 1, 2 and 4 remain."""
    rows = [{"step": 4, "m": 0.5}, {"step": 1, "m": 2}, {"step": 3, "m": math.nan}, {"step": 5, "m": math.inf},
            {"step": 2, "m": 1.0}, {"step": 6, "m": "x"}, {"step": 7}]
    assert series(rows, "m") == ([1.0, 2.0, 4.0], [2.0, 1.0, 0.5])


def test_thin_keeps_evenly_spaced_points_and_the_last():
    """10 points, limit 4: stride ceil(10/4) = 3 keeps indices 0, 3, 6, 9 (9 is the last); limit 5: stride 2 keeps
    0, 2, 4, 6, 8 and then the last, 9. Within the limit nothing is dropped."""
    steps = [float(i) for i in range(10)]
    assert thin(steps, steps, limit=4)[0] == [0, 3, 6, 9]
    assert thin(steps, steps, limit=5) == ([0, 2, 4, 6, 8, 9], [0, 2, 4, 6, 8, 9])
    assert thin(steps, steps, limit=10) == (steps, steps)


def test_svg_text_from_files_is_escaped_and_never_mathtext():
    """Run names come from folder names and metric names from metrics.jsonl: a `<script>` in one is text in the
    SVG (`&lt;script&gt;`), and `$x$` stays the three characters `$x$` (mathtext would draw an italic x)."""
    runs = {"<script>alert(1)</script>": [{"step": s, "train/loss": 1 / s} for s in range(1, 6)],
            "a & b $x$": [{"step": s, "train/loss": 2 / s} for s in range(1, 6)]}
    svg = curves_svg("Loss", runs, ["train/loss"])
    assert "<script" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    texts = ["".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG_NS}text")]
    assert "<script>alert(1)</script>" in texts and "a & b $x$" in texts
    assert plain_label("_hidden") != "_hidden" and plain_label("_hidden").endswith("_hidden")


@pytest.mark.parametrize("bad", ['<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
                                 '<svg xmlns="http://www.w3.org/2000/svg"><g onload="x()"/></svg>',
                                 '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject/></svg>',
                                 '<svg xmlns="http://www.w3.org/2000/svg" xmlns:l="http://www.w3.org/1999/xlink">'
                                 '<a l:href="javascript:x()"/></svg>'])
def test_checked_svg_refuses_anything_that_could_run(bad):
    with pytest.raises(ValueError):
        checked_svg('<?xml version="1.0"?>\n' + bad)


# -- the page, from fixture files ------------------------------------------------------------------


def write_run(path: Path, steps: int = 6, eval_rows: bool = True) -> Path:
    """A run directory as the recipes leave it (metrics, config, lineage), without a model."""
    path.mkdir(parents=True)
    rows = [{"step": s, "train/loss": 3 / s, "train/lr": 1e-3, "perf/tokens_per_second": 1000 + s} for s in
            range(1, steps + 1)]
    rows += [{"step": steps, "eval/loss": 0.7}] if eval_rows else []
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "config.json").write_text(json.dumps({"optim": {"lr": 1e-3}, "run": {"name": path.name}}))
    (path / "lineage.json").write_text(json.dumps({"base_model": {"name": "tiny", "parameters": 590464},
                                                   "data": [{"source": "d.jsonl", "sha256": "ab" * 32, "rows": 3}],
                                                   "code": {"posttrain": "0.1.0"}}))
    return path


def write_eval(folder: Path, completions: dict[str, list[str]], task: str = "builtin:arithmetic/heldout") -> Path:
    """results.json (format posttrain-eval/1) and samples.jsonl for models answering the same prompts."""
    folder.mkdir(parents=True, exist_ok=True)
    models = list(completions)
    results = {
        "format": "posttrain-eval/1", "created": "2026-12-02T05:10:00Z",
        "models": [{"label": m, "name": f"runs/{m}/final", "lineage": None} for m in models],
        "tasks": [{"name": task, "sha256": "cd" * 32, "n": 3, "reward": "numeric"}],
        "settings": {"temperature": 0.0, "max_new_tokens": 32},
        "accuracy": [{"model": m, "task": task, "value": 0.75, "ci_low": 0.6123, "ci_high": 0.8456, "n": 3}
                     for m in models],
        "pass_at_k": [], "rm_score": [], "length": [], "finish_reasons": [{"model": models[0], "task": task,
                                                                        "counts": {"stop": 2, "length": 1}}],
        "win_rates": [{"a": models[-1], "b": models[0], "task": task, "judge": "verifier", "value": 0.62,
                       "ci_low": 0.57, "ci_high": 0.67, "n": 3, "wins": 2, "ties": 0, "losses": 1}],
        "ratings": [{"model": m, "rating": 1000.0 + 10 * i, "ci_low": 990.0, "ci_high": 1030.0, "rank": i + 1}
                    for i, m in enumerate(models)],
    }
    (folder / "results.json").write_text(json.dumps(results))
    samples = [{"model": m, "task": task, "prompt_index": i, "sample_index": 0, "prompt": f"What is {i}+{i}?",
                "completion": text, "answer": str(2 * i), "score": float(text == str(2 * i)), "rm_score": None,
                "finish_reason": "stop", "length": 2}
               for m in models for i, text in enumerate(completions[m])]
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return folder / "results.json"


def test_the_page_escapes_model_output_and_has_no_script_at_all(tmp_path):
    """The whole document holds no `<script` and no `<img` (the hostile completion is there as escaped text),
    fetches nothing (no src/href other than in-page fragments), and carries the CSP meta tag."""
    run = write_run(tmp_path / "sft")
    write_eval(run / "eval", {"sft": ["0", HOSTILE, "4"], "dpo": ["0", "2", "4"]})
    runs, evals = load_inputs([str(run)])
    html = render_report(runs, evals)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;window.__x=1&lt;/script&gt;&lt;img src=x onerror=&#34;window.__y=1&#34;&gt;" in html
    assert """content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">""" in html
    links = re.findall(r"""\b(?:src|href)=["']([^"']*)""", html)
    assert all(link.startswith("#") for link in links), links
    assert html.count("<svg") == 3  # Loss, Learning rate, Throughput


def test_side_by_side_pairs_the_same_prompt_and_caps_the_rows(tmp_path):
    """Two models' samples of prompts 0-2 in one evaluation and prompt 3 of one model only: three rows pair up,
    the cap keeps two; --compare with a model that has no samples is a one-line error."""
    write_eval(tmp_path / "e", {"sft": ["0", "2", "5"], "dpo": ["0", "2", "4"]})
    ev = Evaluation("e", tmp_path / "e" / "results.json", {}, [
        *[json.loads(x) for x in (tmp_path / "e" / "samples.jsonl").read_text().splitlines()],
        {"model": "sft", "task": "builtin:arithmetic/heldout", "prompt_index": 3, "sample_index": 0,
         "prompt": "What is 3+3?", "completion": "6"}])
    pairs = side_by_side([ev], None, cap=2)
    assert pairs["models"] == ["sft", "dpo"] and pairs["total"] == 3 and len(pairs["rows"]) == 2
    assert [c["completion"] for c in pairs["rows"][1]["cells"]] == ["2", "2"]
    assert side_by_side([ev], ("dpo", "sft"), cap=9)["rows"][2]["cells"][0]["completion"] == "4"
    with pytest.raises(UserError, match="no samples of rm"):
        side_by_side([ev], ("sft", "rm"), cap=9)


def test_side_by_side_shows_every_model_of_the_first_ones_prompts_and_names_the_rest(tmp_path):
    """base, sft and dpo evaluated together: all three are columns (the DPO run's degenerate answers were left
    out of the page when only the first two were shown); five models: four, and the page names the fifth."""
    write_eval(tmp_path / "e", {"base": ["0", "2", "5"], "sft": ["0", "2", "4"], "dpo": ["0", "0", "0"]})
    ev = Evaluation("e", tmp_path / "e" / "results.json", {}, [
        json.loads(x) for x in (tmp_path / "e" / "samples.jsonl").read_text().splitlines()])
    pairs = side_by_side([ev], None, cap=9)
    assert pairs["models"] == ["base", "sft", "dpo"] and pairs["left_out"] == []
    assert [c["completion"] for c in pairs["rows"][1]["cells"]] == ["2", "2", "0"]
    five = write_eval(tmp_path / "f", {m: ["0", "2", "4"] for m in ("m1", "m2", "m3", "m4", "m5")})
    html = render_report(*load_inputs([str(five)]))
    assert "Responses side by side: m1 vs m2 vs m3 vs m4" in html and "Not shown: m5" in html


def test_an_evaluation_alone_makes_a_report(tmp_path, capsys):
    """A results.json passed directly (no run): its tables and its samples side by side, no figure."""
    results = write_eval(tmp_path / "evals" / "e1", {"sft": ["0", "2", "5"], "dpo": ["0", "2", "4"]})
    out = tmp_path / "r.html"
    assert main(["report", str(results), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    html = out.read_text()
    assert "<svg" not in html and "Responses side by side: sft vs dpo" in html
    assert "[61.2%, 84.6%]" in html and "Ratings (Bradley–Terry)" in html and "stop 2, length 1" in html
    assert "<td class=\"num\">62.0%</td>" in html and "[57.0%, 67.0%]" in html  # fractions as eval prints them


def test_the_position_column_only_for_a_judge_that_sees_an_order(tmp_path):
    """A verifier's win rate (or the demo's, whose rater sees no order) has no figure by position: no column of
    "– / –"; a rater judged in both orders gets its two figures."""
    results = write_eval(tmp_path / "e", {"sft": ["0", "2", "5"], "dpo": ["0", "2", "4"]})
    assert "shown first / second" not in render_report(*load_inputs([str(results)]))
    data = json.loads(results.read_text())
    data["win_rates"][0].update(judge="rater:concise", a_first_win_rate=0.6, b_first_win_rate=0.64)
    results.write_text(json.dumps(data))
    html = render_report(*load_inputs([str(results)]))
    assert "shown first / second" in html and "60.0% / 64.0%" in html


def test_the_lineage_names_the_feedback_export_a_run_learned_from(tmp_path):
    """A run trained on an export file (`export_ids`) or on a campaign (`export_id`, its excluded raters): the
    report, the page a lead shares, names the export ids that tie the version to its judgments."""
    run = write_run(tmp_path / "rm")
    lineage = json.loads((run / "lineage.json").read_text())
    lineage["data"] = [{"source": "judgments.jsonl", "sha256": "ab" * 32, "rows": 71, "export_ids": ["fb-af79eb47d09a0346"]},
                       {"source": "feedback:sqlite:///fb.db#v1-vs-v2", "sha256": None, "rows": 54,
                        "export_id": "fb-84c8e76ac3fe961e", "feedback": {"excluded_raters": ["cho"]}}]
    (run / "lineage.json").write_text(json.dumps(lineage))
    html = render_report(*load_inputs([str(run)]))
    assert "feedback export <code>fb-af79eb47d09a0346</code>" in html
    assert "feedback export <code>fb-84c8e76ac3fe961e</code> · raters excluded: cho" in html
    assert "(54 rows) sha256" not in html  # a campaign has no file to hash


def test_two_runs_share_axes_and_runs_of_the_same_name_are_told_apart(tmp_path):
    a, b = write_run(tmp_path / "a" / "sft"), write_run(tmp_path / "b" / "sft", steps=4)
    runs, _ = load_inputs([str(a), str(b)])
    assert [r.name for r in runs] == ["a/sft", "b/sft"]
    html = render_report(runs, [])
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert all("a/sft" in s and "b/sft" in s for s in svgs)


def test_an_input_given_twice_is_shown_once(tmp_path):
    """The same run twice, and a run beside its own eval/results.json, are one run and one evaluation."""
    run = write_run(tmp_path / "sft")
    write_eval(run / "eval", {"sft": ["0", "2", "5"]})
    runs, evals = load_inputs([str(run), str(run), str(run / "eval" / "results.json"), str(run / "eval")])
    assert [r.name for r in runs] == ["sft"] and len(evals) == 1


# -- bad input --------------------------------------------------------------------------------------


def bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "no-metrics").mkdir()
    (tmp / "empty").mkdir()
    (tmp / "empty" / "metrics.jsonl").write_text("")
    (tmp / "broken").mkdir()
    (tmp / "broken" / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2,\n')
    (tmp / "other.json").write_text('{"accuracy": 1}')
    good = write_run(tmp / "good")
    (tmp / "weird.json").write_text('{"format": "posttrain-eval/1", "accuracy": "x"}')
    partial = json.loads(write_eval(tmp / "partial", {"sft": ["0"]}).read_text())
    del partial["accuracy"][0]["ci_low"]
    (tmp / "partial" / "results.json").write_text(json.dumps(partial))
    (tmp / "control").mkdir()
    (tmp / "control" / "results.json").write_text('{"format": "posttrain-eval/1", "created": "a\tb"}')
    (tmp / "latin1").mkdir()
    (tmp / "latin1" / "metrics.jsonl").write_bytes(b'{"step": 1, "note": "caf\xe9"}\n')
    return {
        "not UTF-8": ([str(tmp / "latin1")], "metrics.jsonl: is not UTF-8 text (byte 0xe9 at offset 24)"),
        "fields missing": ([str(tmp / "weird.json")], 'weird.json: field "models" is missing; is it a results.json'),
        "a row without ci_low": ([str(tmp / "partial")], 'results.json: accuracy[0]: field "ci_low" is missing'),
        "the whole JSON error": ([str(tmp / "control")], "control/results.json:1: not JSON (Invalid control "
                                                         "character at: line 1 column"),
        "missing": ([str(tmp / "nope")], "nope: no such file or directory"),
        "no metrics": ([str(tmp / "no-metrics")], "no-metrics: no metrics.jsonl (not a run directory)"),
        "empty metrics": ([str(tmp / "empty")], "metrics.jsonl: empty"),
        "bad line": ([str(tmp / "broken")], "metrics.jsonl:2: not JSON"),
        "foreign json": ([str(good), str(tmp / "other.json")], "other.json: not a posttrain evaluation"),
        "nothing": ([], "no run directory given"),
        "output is a folder": ([str(good), "-o", str(tmp)], "is a directory"),
    }


@pytest.mark.parametrize("case", ["missing", "no metrics", "empty metrics", "bad line", "foreign json", "nothing",
                                  "output is a folder", "fields missing", "a row without ci_low",
                                  "the whole JSON error", "not UTF-8"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, message = bad_cases(tmp_path)[case]
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("posttrain report: error: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "report.html").exists()


# -- a real run: model card, and the report in a browser ---------------------------------------------


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_dir) -> Path:
    """A real short SFT run (8 steps, every step logged, a held-out split), with an evaluation written into its
    eval/ in posttrain eval's format: the SFT model against the base, one completion hostile."""
    from posttrain.config import ModelConfig, OptimConfig, RunConfig
    from posttrain.recipes.sft import SFTConfig, SFTDataConfig, train

    tmp = tmp_path_factory.mktemp("report")
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": str(2 * i)}]} for i in range(24)]
    (tmp / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = train(SFTConfig(model=ModelConfig(name="tiny"),
                          data=SFTDataConfig(train=str(tmp / "chats.jsonl"), max_length=64, eval_fraction=0.25),
                          optim=OptimConfig(lr=3e-3, warmup_steps=1, max_steps=8, batch_size=8),
                          run=RunConfig(name="sft", output_dir=str(tmp), progress=False, log_every=1)))
    write_eval(run / "eval", {"tiny": ["1", "3", "5"], "sft": ["0", HOSTILE, "4"]})
    return run


def front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, flags=re.S)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


def test_every_recipe_documents_its_run_and_the_card_reads_as_a_hugging_face_card(sft_run):
    """The recipe wrote report.html and final/README.md: the card's YAML front matter names the base model, the
    data file, the tags and the library; huggingface_hub's ModelCard reads it; the body has the settings from
    config.json and the lineage's data sha256."""
    from huggingface_hub import ModelCard

    assert (sft_run / "report.html").is_file()
    card = (sft_run / "final" / "README.md").read_text()
    meta = front_matter(card)
    lineage = json.loads((sft_run / "lineage.json").read_text())
    # no `datasets`: the Hub takes it for dataset repository ids, and the data is a local file (named below)
    assert meta == {"base_model": "tiny", "tags": ["posttrain", "sft"], "library_name": "transformers",
                    "pipeline_tag": "text-generation"}
    assert f"| `{lineage['data'][0]['source']}` |" in card
    loaded = ModelCard.load(sft_run / "final" / "README.md")
    assert loaded.data.base_model == "tiny" and loaded.data.tags == ["posttrain", "sft"]
    assert "| `optim.max_steps` | 8 |" in card and f"sha256 `{lineage['data'][0]['sha256']}`" in card
    assert "| `eval/loss` |" in card  # the held-out figure the run logged


def test_a_dpo_card_names_its_objective_and_evaluation(tmp_path, tiny_dir):
    """With eval/results.json in the run, its accuracy and win rate rows (with intervals) are in the card."""
    from posttrain.eval.document import model_card

    run = write_run(tmp_path / "dpo")
    (run / "config.json").write_text(json.dumps({"optim": {"lr": 5e-4}, "dpo": {"loss": "ipo", "beta": 0.1, "label_smoothing": 0.0,
                                                                                "simpo_gamma_beta_ratio": 0.5}}))
    write_eval(run / "eval", {"sft": ["0", "2", "4"], "dpo": ["0", "2", "4"]})
    card = model_card(run, "dpo")
    assert front_matter(card)["tags"] == ["posttrain", "dpo", "ipo"]
    assert "dpo.beta" in card and "label_smoothing" not in card and "simpo_gamma" not in card  # DPO's, SimPO's
    assert "| `dpo.beta` | 0.1 |" in card
    assert "| win rate of dpo over sft (verifier) | `builtin:arithmetic/heldout` | 0.62 | [0.57, 0.67] | 3 |" in card


def test_a_recipe_missing_from_algorithms_still_gets_a_card(tmp_path):
    """A new recipe not yet in ALGORITHMS (trial 13: a KeyError traceback after the whole run, no card, no
    report); tests/test_docs.py asks for its row."""
    from posttrain.eval.document import model_card

    card = model_card(write_run(tmp_path / "rpp", eval_rows=False), "reinforce_pp")
    assert front_matter(card)["tags"] == ["posttrain", "reinforce_pp"] and "docs/algorithms/reinforce_pp.md" in card


def test_a_reward_model_card_says_how_it_loads(tmp_path):
    """A reward model is a sequence classifier with one label; its own settings (margin, center_coef) are listed,
    LoRA's alpha only when LoRA was on."""
    from huggingface_hub import ModelCard

    from posttrain.eval.document import model_card

    run = write_run(tmp_path / "rm", eval_rows=False)
    (run / "config.json").write_text(json.dumps({"model": {"name": "tiny", "lora_r": 0, "lora_alpha": 16},
                                                 "margin": True, "center_coef": 0.01}))
    card = model_card(run, "rm")
    (tmp_path / "README.md").write_text(card)
    assert ModelCard.load(tmp_path / "README.md").data.pipeline_tag == "text-classification"
    assert front_matter(card)["tags"] == ["posttrain", "reward-model"]
    assert "AutoModelForSequenceClassification.from_pretrained(\"path/to/this/folder\", num_labels=1)" in card
    assert "| `margin` | true |" in card and "| `center_coef` | 0.01 |" in card and "lora_alpha" not in card
    assert "No held-out data and no evaluation yet" in card


def test_the_report_of_a_real_run_in_chromium(sft_run, page, tmp_path, capsys):
    """Opened from disk: every figure is an SVG whose longest path has a point per logged step (not blank), the
    evaluation tables are there, the hostile completion is shown as text and ran nothing."""
    out = tmp_path / "report.html"
    assert main(["report", str(sft_run), "-o", str(out)]) == 0, capsys.readouterr().err
    page.goto(out.as_uri())
    titles = page.eval_on_selector_all(".figure", "els => els.map(e => e.dataset.title)")
    assert titles == ["Loss", "Learning rate", "Gradient norm", "Throughput: tokens per second"]
    points = page.eval_on_selector_all(".figure svg", """svgs => svgs.map(s => Math.max(...Array.from(
        s.querySelectorAll('path'), p => (p.getAttribute('d') || '').split(/[ML]/).length - 1)))""")
    assert all(n >= 8 for n in points), points  # 8 logged steps in each line (axes and boxes have 2-5 points)
    boxes = page.eval_on_selector_all(".figure svg", "svgs => svgs.map(s => s.getBoundingClientRect().height)")
    assert all(h > 150 for h in boxes), boxes
    legends = page.eval_on_selector_all(".figure svg", "svgs => svgs.map(s => s.textContent.includes('sft'))")
    assert all(legends)
    tables = page.inner_text("body")
    assert "[61.2%, 84.6%]" in tables and "Win rates" in tables and "tiny vs sft" in tables
    assert page.evaluate("[typeof window.__x, typeof window.__y]") == ["undefined", "undefined"]
    assert page.locator("img").count() == 0
    assert HOSTILE in page.locator("pre.completion").all_inner_texts()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_an_evaluation_into_the_run_updates_its_card_and_report(sft_run, tmp_path, capsys):
    """`posttrain eval --models RUN/final` writes RUN/eval/ and then RUN/final/README.md and RUN/report.html
    show it (the card's algorithm read back from its own tags)."""
    import shutil

    from posttrain.eval.document import documented_algorithm

    run = tmp_path / "sft"
    shutil.copytree(sft_run, run)
    shutil.rmtree(run / "eval")
    assert documented_algorithm(run) == "sft"
    assert "From `eval/results.json`" not in (run / "final" / "README.md").read_text()
    assert main(["eval", "--models", str(run / "final"), "--limit", "3", "--no-progress",
                 "--sampling.max-new-tokens", "4"]) == 0
    card = (run / "final" / "README.md").read_text()
    assert "From `eval/results.json`" in card and front_matter(card)["tags"][:2] == ["posttrain", "sft"]
    assert "builtin:arithmetic/heldout" in (run / "report.html").read_text()
    assert "now show it" in capsys.readouterr().err


def test_the_cards_base_model_is_a_hub_id_where_one_is_known(tmp_path):
    """A card copied to the Hub must name a repository there: smollm2's source, what a posttrain run itself
    started from (runs/sft/final -> its card's base_model), a Hub cache folder's repository; a random-init
    built-in or a plain local folder has none and is named as given."""
    from posttrain.eval.document import hub_base_model

    assert hub_base_model("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    sft = tmp_path / "runs" / "sft" / "final"
    sft.mkdir(parents=True)
    (sft / "README.md").write_text("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\ntags: [posttrain]\n---\n")
    assert hub_base_model(str(sft)) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    cache = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B" / "snapshots" / "abc123"
    cache.mkdir(parents=True)
    assert hub_base_model(str(cache)) == "Qwen/Qwen2.5-0.5B"
    assert hub_base_model("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert hub_base_model("tiny") is None and hub_base_model(str(tmp_path)) is None


def test_a_lora_runs_card_says_whether_the_adapters_are_merged(tmp_path, tiny_dir):
    from posttrain.eval.document import model_card

    run = write_run(tmp_path / "sft")
    for save, said in (("merged", "merged into these weights: a plain model"), ("adapter", "LoRA adapters (r=8) only")):
        (run / "config.json").write_text(json.dumps({"model": {"name": "tiny", "lora_r": 8, "lora_save": save}}))
        assert said in model_card(run, "sft")


def test_an_rl_runs_report_shows_its_held_out_answers_before_and_after(tmp_path):
    """grpo/rloo/ppo write samples/eval-step-N.jsonl; the report puts the first and last evaluation side by side,
    matched by prompt, with each answer's reward and reason. A completion holding U+2028 (which str.splitlines
    would take for a line break) is one JSONL line."""
    from posttrain.eval.report import write_report
    from posttrain.files import write_jsonl

    run = write_run(tmp_path / "grpo")
    for step, answers in ((0, ["7\u2028", "one"]), (3, ["9", "8"]), (5, ["8", "9"])):
        write_jsonl([{"prompt": f"What is {p}?", "completion": a, "reward": float(a.strip() == str(4 + p)),
                      "reason": f"extracted {a.strip()}", "answer": str(4 + p)} for p, a in zip((4, 5), answers)],
                    run / "samples" / f"eval-step-{step}.jsonl")
    html = write_report([str(run)], tmp_path / "r.html").read_text()
    assert "Responses side by side: grpo step 0 vs grpo step 5" in html
    assert "2 of 2 prompts both models answered" in html and "(extracted 9)" in html
