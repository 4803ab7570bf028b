"""Recipe tier: a base model of another family (the tiny Qwen2 without a chat template) trains on plain
strings by concatenation (SFT on prompt-completion and text, DPO and RM on pairs), refuses conversational
data with one line unless `--data.chat-template` names a template, and then saves that template in final/."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from posttrain.cli import main
from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from posttrain.data.records import parse_record
from posttrain.data.tokenize import CHATML, tokenize_record
from posttrain.models.load import load_tokenizer, resolve_model_dir
from posttrain.recipes.dpo import DPOConfig, PreferenceDataConfig
from posttrain.recipes.dpo import train as train_dpo
from posttrain.recipes.reward_model import RewardModelConfig
from posttrain.recipes.reward_model import train as train_rm
from posttrain.recipes.sft import SFTConfig, SFTDataConfig
from posttrain.recipes.sft import train as train_sft

BASE = "tiny-qwen2-base"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def plain_rows(n: int = 24) -> list[dict]:
    return [{"prompt": f"What is {i} + {i}?", "completion": f" The answer is {2 * i}."} for i in range(n)]


def chat_rows(n: int = 24) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                          {"role": "assistant", "content": f"{i + 1}"}]} for i in range(n)]


def pair_rows(n: int = 24) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "chosen": f" {i + 1}", "rejected": " I think it is a big number"}
            for i in range(n)]


def run(tmp: Path, name: str) -> RunConfig:
    return RunConfig(name=name, output_dir=str(tmp), progress=False, log_every=1)


def optim(**kw) -> OptimConfig:
    return OptimConfig(**{"lr": 3e-3, "warmup_steps": 0, "max_steps": 6, "batch_size": 8, **kw})


def losses(run_dir: Path, key: str = "train/loss") -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def start_weights() -> dict[str, torch.Tensor]:
    return load_file(str(resolve_model_dir(BASE) / "model.safetensors"))


def changed(run_dir: Path, reference: dict[str, torch.Tensor]) -> bool:
    final = load_file(str(run_dir / "final" / "model.safetensors"))
    return any(not torch.equal(final[k], reference[k]) for k in reference if k in final)


def test_the_base_model_is_a_qwen2_without_a_chat_template():
    config = json.loads((resolve_model_dir(BASE) / "config.json").read_text())
    tokenizer = load_tokenizer(BASE)
    assert config["model_type"] == "qwen2" and not tokenizer.chat_template
    assert tokenizer.eos_token == "<|endoftext|>"


def test_plain_prompt_completion_trains_exactly_the_completion_tokens():
    """prompt_ids = tok(prompt), then tok(completion) + eos, the completion's tokens the only ones trained
    (TRL's concatenation for non-conversational data); no chat template markers anywhere."""
    tokenizer = load_tokenizer(BASE)
    record = parse_record({"prompt": "What is 2 + 3?", "completion": " The answer is 5."})
    example = tokenize_record(record, tokenizer, max_length=64)
    prompt_ids = tokenizer("What is 2 + 3?")["input_ids"]
    completion_ids = tokenizer(" The answer is 5.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert example.input_ids == prompt_ids + completion_ids
    assert example.loss_mask == [False] * len(prompt_ids) + [True] * len(completion_ids)
    assert "<|im_start|>" not in tokenizer.decode(example.input_ids)


def test_sft_on_plain_prompt_completion(tmp_path):
    data = write_jsonl(tmp_path / "pc.jsonl", plain_rows())
    out = train_sft(SFTConfig(model=ModelConfig(name=BASE), data=SFTDataConfig(train=str(data), max_length=64),
                              optim=optim(), run=run(tmp_path, "pc")))
    loss = losses(out)
    assert len(loss) == 6 and all(math.isfinite(x) for x in loss) and loss[-1] < loss[0]
    assert changed(out, start_weights())
    assert not AutoTokenizer.from_pretrained(out / "final").chat_template  # nothing invented for a base model


def test_sft_on_text(tmp_path):
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": f"The sum of {i} and {i} is {2 * i}."} for i in range(24)])
    out = train_sft(SFTConfig(model=ModelConfig(name=BASE), data=SFTDataConfig(train=str(data), max_length=64),
                              optim=optim(), run=run(tmp_path, "text")))
    loss = losses(out)
    assert all(math.isfinite(x) for x in loss) and loss[-1] < loss[0]
    assert changed(out, start_weights())


def test_conversational_data_without_a_template_is_one_line(tmp_path, capsys):
    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows())
    code = main(["sft", "--model.name", BASE, "--data.train", str(data), "--run.output-dir", str(tmp_path),
                 "--run.no-progress", "--optim.max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(f"posttrain sft: error: {data}:1: model ")
    assert line.endswith("has no chat template, so conversational records (message lists) cannot be tokenized; "
                         "pass --data.chat-template chatml (or a Jinja file), or give prompt and completion as "
                         "plain strings")
    assert not (tmp_path / "sft").exists()


def test_chat_template_chatml_trains_and_is_saved_in_final(tmp_path, capsys):
    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows())
    code = main(["sft", "--model.name", BASE, "--data.train", str(data), "--data.chat-template", "chatml",
                 "--run.output-dir", str(tmp_path), "--run.name", "chatml", "--run.no-progress",
                 "--optim.max-steps", "3", "--optim.batch-size", "8"])
    assert code == 0, capsys.readouterr().err
    final = tmp_path / "chatml" / "final"
    assert AutoTokenizer.from_pretrained(final).chat_template == CHATML
    rendered = load_tokenizer(str(final)).apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                                              add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert all(math.isfinite(x) for x in losses(tmp_path / "chatml"))


def test_chat_template_from_a_jinja_file(tmp_path, capsys):
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows())
    code = main(["sft", "--model.name", BASE, "--data.train", str(data), "--data.chat-template", str(template),
                 "--run.output-dir", str(tmp_path), "--run.name", "jinja", "--run.no-progress",
                 "--optim.max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert AutoTokenizer.from_pretrained(tmp_path / "jinja" / "final").chat_template == template.read_text()
    code = main(["sft", "--model.name", BASE, "--data.train", str(data), "--data.chat-template", "nope",
                 "--run.output-dir", str(tmp_path), "--run.name", "bad", "--run.no-progress"])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and "data.chat_template='nope': no such file and not a built-in template (chatml)" in line


def test_dpo_on_plain_pairs(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    out = train_dpo(DPOConfig(model=ModelConfig(name=BASE), data=PreferenceDataConfig(train=str(data), max_length=64),
                              optim=optim(lr=1e-3, max_steps=4), run=run(tmp_path, "dpo")))
    loss = losses(out)
    assert loss[0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the first step
    assert all(math.isfinite(x) for x in loss) and loss[-1] < loss[0]
    assert changed(out, start_weights())


def test_rm_on_plain_pairs(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    out = train_rm(RewardModelConfig(model=ModelConfig(name=BASE), data=DataConfig(train=str(data), max_length=64),
                                     optim=optim(max_steps=4), run=run(tmp_path, "rm")))
    loss = losses(out)
    assert len(loss) == 4 and all(math.isfinite(x) for x in loss) and loss[-1] < loss[0]
    assert (out / "final" / "model.safetensors").is_file()


def test_the_sampler_continues_a_plain_prompt_as_its_text():
    """A plain prompt record is sampled from its text's tokens; a conversational one needs a template."""
    from posttrain.config import SamplingParams
    from posttrain.data.records import Prompt
    from posttrain.errors import DataError
    from posttrain.models.load import load_model
    from posttrain.sampling.sampler import ModelSampler, sample_messages

    model, tokenizer = load_model(ModelConfig(name=BASE))
    prompt = parse_record({"prompt": "What is 2 + 3?", "answer": "5"}, accept=(Prompt,))
    rollout = sample_messages(ModelSampler(model, tokenizer), [prompt], tokenizer, 2,
                              SamplingParams(max_new_tokens=4, temperature=0.0))
    assert rollout.prompt_ids == [tokenizer("What is 2 + 3?")["input_ids"]] * 2
    chat = parse_record({"prompt": [{"role": "user", "content": "What is 2 + 3?"}]}, accept=(Prompt,))
    with pytest.raises(DataError, match="has no chat template"):
        sample_messages(ModelSampler(model, tokenizer), [chat], tokenizer, 1, SamplingParams(max_new_tokens=4))


def test_rl_prompts_that_need_a_template_name_the_row_and_the_option(tmp_path):
    """RL has --data.chat-template: its message says so, naming the first message-list row, before any sampling."""
    from posttrain.errors import DataError
    from posttrain.rl.setup import load_prompts

    source = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "What is 1+1?", "answer": "2"}, {"prompt": [{"role": "user", "content": "3+3?"}], "answer": "6"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_prompts(str(source), load_tokenizer(BASE), None, 512, BASE)
    assert str(err.value).startswith(f"{source}:2: model {BASE} has no chat template")
    assert "pass --data.chat-template chatml (or a Jinja file)" in str(err.value)
    prompts, ids = load_prompts(str(source), load_tokenizer(BASE), 1, 512, BASE)  # the plain row alone is fine
    assert len(prompts) == len(ids) == 1
