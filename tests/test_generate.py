"""`posttrain generate` end to end on the tiny model and the built-in arithmetic prompts."""

from __future__ import annotations

import json

from posttrain.cli import main
from posttrain.data.records import PromptCompletion, parse_record


def test_generate_writes_prompt_completion_jsonl(tmp_path, capsys):
    out = tmp_path / "sub" / "samples.jsonl"
    argv = ["generate", "--limit", "2", "--n", "3", "--sampling.max-new-tokens", "5", "--sampling.seed", "0",
            "--no-progress", "--output", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and [r["sample"] for r in rows] == [0, 1, 2, 0, 1, 2]
    assert rows[0]["prompt"] == rows[2]["prompt"] != rows[3]["prompt"]
    assert all(isinstance(parse_record(r), PromptCompletion) for r in rows)  # trainable by `posttrain sft`
    assert all(r["finish_reason"] in ("eos", "length") and 1 <= r["num_tokens"] <= 5 for r in rows)
    assert "answer" in rows[0]["reference"]
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    assert main(argv) == 0 and out.read_text().splitlines() == [json.dumps(r, ensure_ascii=False) for r in rows]


def test_generate_prints_a_table(capsys):
    assert main(["generate", "--limit", "1", "--sampling.max-new-tokens", "3", "--no-progress"]) == 0
    assert "What is" in capsys.readouterr().out


def test_generate_bad_value_is_one_line(capsys):
    assert main(["generate", "--sampling.top-p", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posttrain generate: error: top_p=0.0") and "\n" not in err
