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
    assert err.startswith("posttrain generate: error: sampling.top_p=0.0") and "\n" not in err


def test_inline_prompt_replaces_prompts(tmp_path):
    out = tmp_path / "one.jsonl"
    assert main(["generate", "--prompt", "What is 2+3?", "--sampling.max-new-tokens", "3", "--no-progress",
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": "What is 2+3?"}]]


def test_conversation_rows_are_prompted_up_to_their_last_assistant_turn():
    """[user, assistant] -> [user]; [user, assistant, user] -> all three; [system, user, assistant, user, assistant]
    -> the first four (the model writes the last assistant turn again)."""
    from posttrain.data.records import Conversation
    from posttrain.generate import as_prompt

    def convo(*roles):
        return parse_record({"messages": [{"role": r, "content": f"{r} {i}"} for i, r in enumerate(roles)]},
                            accept=(Conversation,))

    def roles(record):
        return [m.role for m in as_prompt(record).prompt]

    assert roles(convo("user", "assistant")) == ["user"]
    assert roles(convo("user", "assistant", "user")) == ["user", "assistant", "user"]
    assert roles(convo("system", "user", "assistant", "user", "assistant")) == ["system", "user", "assistant", "user"]


def test_generate_reads_a_conversation_file(tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "What is 1 + 1?"},
                                             {"role": "assistant", "content": "2"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--prompts", str(data), "--sampling.max-new-tokens", "3", "--no-progress",
                 "--output", str(out)]) == 0
    assert json.loads(out.read_text())["prompt"] == [{"role": "user", "content": "What is 1 + 1?"}]


def test_eval_of_a_reward_model_says_so_in_one_line(tmp_path, capsys, tiny_dir):
    import shutil

    rm = tmp_path / "rm" / "final"
    shutil.copytree(tiny_dir, rm)
    (rm / "reward_model.json").write_text('{"kind": "bradley_terry", "pooling": "last_token"}\n')
    assert main(["eval", "--model.name", str(rm), "--limit", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a reward model" in err and "RewardFunction.load" in err, err


def test_a_base_model_with_a_message_list_prompt_names_the_row_and_a_fix_the_command_has(tmp_path, capsys):
    """generate and eval said 'pass --data.chat-template chatml', an option they do not have, naming no row and
    the model by its cache path."""
    prompts = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "What is 1+1?", "answer": "2"},
            {"messages": [{"role": "user", "content": "What is 3+3?"}], "answer": "6"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for command in (["generate", "--prompts"], ["eval", "--tasks"]):
        assert main([*command, str(prompts), "--model.name", "tiny-qwen2-base", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"posttrain {command[0]}: error: {prompts}:2: model tiny-qwen2-base has no chat template")
        assert "--data.chat-template chatml (its final/ keeps the template)" in err and "pass --data" not in err


def test_an_output_that_is_the_prompts_file_itself_is_refused_and_the_prompts_kept(tmp_path, monkeypatch, capsys):
    """generate --prompts p.jsonl --output p.jsonl replaced the prompts with completions; data pairs did too with
    --overwrite."""
    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "What is 1+1?", "answer": "2"}\n')
    before = prompts.read_bytes()
    for command in (["generate", "--output", "./p.jsonl"], ["data", "pairs", "--output", "p.jsonl", "--overwrite"]):
        assert main([*command, "--prompts", "p.jsonl", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is the prompts file itself" in err, err
    assert prompts.read_bytes() == before


def test_every_prompt_of_a_file_is_sampled_unless_limited(tmp_path, capsys):
    """A file's 12 prompts all get completions (trial 14: the default --limit 8 cut the file without a word);
    a built-in task still gives a quick look at its first 8."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(12)))
    out = tmp_path / "o.jsonl"
    base = ["generate", "--sampling.max-new-tokens", "2", "--no-progress"]
    assert main([*base, "--prompts", str(prompts), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 12
    assert main([*base, "--prompts", str(prompts), "--limit", "5", "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 5 and "(replacing the file that was there)" in capsys.readouterr().err
    assert main([*base, "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 8


def test_an_output_that_cannot_be_written_is_refused_before_sampling(tmp_path, capsys):
    """A folder given as --output (or a file as eval's --output-dir) was a traceback after all the work."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "keep.jsonl").write_text("{}\n")
    for argv, words in ((["generate", "--output", str(tmp_path / "runs")], "output=", ),
                        (["generate", "--output", str(tmp_path / "keep.jsonl" / "x.jsonl")], "is a file, not a folder"),
                        (["score", "--reward", "numeric", "--data", str(tmp_path / "keep.jsonl"), "--output",
                          str(tmp_path / "runs")], "is a folder; name a file in it"),
                        (["eval", "--output-dir", str(tmp_path / "keep.jsonl")], "is a file; name a folder")):
        assert main([*argv, "--no-progress"] if argv[0] != "score" else argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err, err
    assert (tmp_path / "keep.jsonl").read_text() == "{}\n" and list((tmp_path / "runs").iterdir()) == []


def test_a_model_whose_weights_file_was_cut_short_is_one_line(tmp_path, capsys, tiny_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["generate", "--model.name", str(broken), "--limit", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not valid safetensors" in err and "copy it again" in err and "\n" not in err, err


def test_a_built_in_task_on_a_model_without_a_chat_template_says_what_can_be_done(capsys):
    """The built-in task's rows are not the user's to rewrite as plain strings (trial 14): the message says to
    sample a model with a chat template instead. Several greedy completions of a prompt are refused, as in eval."""
    assert main(["generate", "--model.name", "tiny-qwen2-base", "--limit", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "a built-in task's prompts are chat turns" in err and "plain string" not in err and "\n" not in err, err
    assert main(["generate", "--n", "3", "--sampling.temperature", "0"]) == 2
    assert "greedy completions of one prompt are all the same" in capsys.readouterr().err
