"""Recipe tier: rows of public data sets as they are. An UltraFeedback-binarized-shaped file (prompt a string,
chosen/rejected whole conversations repeating it, plus messages, scores and ids) trains `posttrain dpo` and
`posttrain rm` a few steps on the tiny model, tokenized exactly as the same pairs written without the extras."""

import json
import math
from pathlib import Path

from posttrain.cli import main
from posttrain.config import DataConfig
from posttrain.data.load import load_records
from posttrain.data.preference import PREFERENCE_KINDS, tokenize_preferences
from posttrain.models.load import load_tokenizer


def ultrafeedback_rows(n: int = 16) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = f"What is {i} + 1?"
        chosen = [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"#### {i + 1}"}]
        rejected = [{"role": "user", "content": prompt}, {"role": "assistant", "content": "a big number"}]
        rows.append({"prompt": prompt, "prompt_id": f"id{i}", "chosen": chosen, "rejected": rejected,
                     "messages": chosen, "score_chosen": 9.0, "score_rejected": 2.0})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ultrafeedback_rows_tokenize_as_the_bare_pairs(tmp_path):
    """The repeated user turn is the prompt, not part of the responses: same tokens as prompt/chosen/rejected."""
    rows = ultrafeedback_rows(4)
    full = write_jsonl(tmp_path / "uf.jsonl", rows)
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"prompt": r["prompt"], "chosen": r["chosen"][1:],
                                                  "rejected": r["rejected"][1:]} for r in rows])
    tokenizer, data = load_tokenizer("tiny"), DataConfig(train="", max_length=64)

    def tokens(path: Path):
        return tokenize_preferences(load_records(str(path), accept=PREFERENCE_KINDS), tokenizer, data, source=str(path))

    assert tokens(full) == tokens(bare)
    assert tokenizer.decode(tokens(full)[0].chosen_ids).count("<|im_start|>user") == 0


def test_posttrain_dpo_and_rm_train_on_ultrafeedback_rows(tmp_path, capsys):
    data = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback_rows())
    common = ["--data.train", str(data), "--data.max-length", "64", "--run.output-dir", str(tmp_path),
              "--run.no-progress", "--run.log-every", "1", "--optim.max-steps", "2", "--optim.batch-size", "4"]
    for command in ("dpo", "rm"):
        code = main([command, *common, "--run.name", command])
        err = capsys.readouterr().err
        assert code == 0, err
        rows = [json.loads(x) for x in (tmp_path / command / "metrics.jsonl").read_text().splitlines()]
        losses = [r["train/loss"] for r in rows if "train/loss" in r]
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
        assert (tmp_path / command / "final" / "model.safetensors").is_file()
