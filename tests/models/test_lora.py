"""LoRA on the tiny model: what trains, the frozen base as reference, and the merged save."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain.config import ModelConfig
from posttrain.models.load import count_parameters, load_model, reference_context, save_pretrained_merged
from posttrain.models.lora import is_lora

IDS = torch.tensor([[5, 17, 40, 2, 9, 33], [7, 7, 1, 80, 12, 3]])  # (B=2, T=6)


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits  # (B, T, V)


def one_step(model) -> None:
    """One AdamW step on the next-token loss of IDS; lr 1e-2 moves each adapter weight by ~1e-2."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model(IDS, labels=IDS).loss.backward()
    optimizer.step()
    model.eval()


def test_only_adapters_train(isolated_cache):
    """Tiny: hidden 128, intermediate 512, 2 layers, kv heads = heads. A rank-r adapter on a d_in x d_out
    linear has r (d_in + d_out) weights. With r = 4 on all linear layers of one block:
    q, k, v, o: 4 x 4 (128 + 128) = 4096; gate, up: 2 x 4 (128 + 512) = 5120; down: 4 (512 + 128) = 2560;
    11776 per block, 23552 for two. With only q_proj, v_proj: 2 x 2 x 4 (128 + 128) = 4096."""
    model, _ = load_model(ModelConfig(name="tiny", lora_r=4))
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable_names and all("lora_" in n for n in trainable_names)
    trainable, total = count_parameters(model)
    assert trainable == 23552
    assert total - trainable == count_parameters(load_model(ModelConfig(name="tiny"))[0])[1]
    qv, _ = load_model(ModelConfig(name="tiny", lora_r=4, lora_target_modules="q_proj, v_proj"))
    assert count_parameters(qv)[0] == 4096


def test_step_moves_the_policy_and_reference_context_is_the_base(isolated_cache):
    base, _ = load_model(ModelConfig(name="tiny"))
    model, _ = load_model(ModelConfig(name="tiny", lora_r=4, lora_alpha=8))
    base.eval()
    model.eval()
    torch.testing.assert_close(logits_of(model), logits_of(base), rtol=0, atol=0)  # B starts at zero
    one_step(model)
    assert (logits_of(model) - logits_of(base)).abs().max() > 1e-3
    with reference_context(model) as reference:
        torch.testing.assert_close(logits_of(reference), logits_of(base), rtol=0, atol=1e-6)
    assert (logits_of(model) - logits_of(base)).abs().max() > 1e-3  # adapters back on after the block


def test_reference_context_refuses_a_full_model(isolated_cache):
    base, _ = load_model(ModelConfig(name="tiny"))
    with pytest.raises(TypeError, match="separate frozen copy"):
        with reference_context(base):
            pass


def test_merged_save_loads_with_plain_transformers(isolated_cache, tmp_path):
    model, tokenizer = load_model(ModelConfig(name="tiny", lora_r=4))
    one_step(model)
    expected = logits_of(model)
    out = tmp_path / "final"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"from an earlier save")
    save_pretrained_merged(model, tokenizer, out)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "stale.bin").exists() and not (out / "adapter_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(logits_of(reloaded), expected, rtol=0, atol=1e-5)
    assert is_lora(model)  # merged into a copy: the caller's model keeps training with its adapters
    torch.testing.assert_close(logits_of(model), expected, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no temporary directories left behind


def test_adapter_save_is_small_and_loads_as_the_merged_model(isolated_cache, tmp_path):
    """--model.lora-save adapter: final/ holds the adapter and tokenizer only, names its base `tiny`, and
    still loads (moved elsewhere) as exactly the model that trained, for a policy and for a reward model."""
    import json
    import shutil

    from posttrain.models.heads import load_reward_model
    from posttrain.models.load import load_tokenizer, save_model

    cfg = ModelConfig(name="tiny", lora_r=4, lora_save="adapter")
    model, tokenizer = load_model(cfg)
    one_step(model)
    expected = logits_of(model)
    save_model(model, tokenizer, tmp_path / "final", cfg)
    names = {p.name for p in (tmp_path / "final").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names
    assert json.loads((tmp_path / "final" / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    moved = tmp_path / "elsewhere" / "sft-adapter"
    shutil.move(tmp_path / "final", moved)
    reloaded, _ = load_model(ModelConfig(name=str(moved)))
    torch.testing.assert_close(logits_of(reloaded.eval()), expected, rtol=0, atol=1e-5)
    assert not torch.equal(expected, logits_of(load_model(ModelConfig(name="tiny"))[0]))  # the adapter mattered
    assert load_tokenizer(str(moved)).get_vocab() == tokenizer.get_vocab()
    rm, _ = load_reward_model(ModelConfig(name=str(moved)))  # a reward model can start from it too
    assert rm is not None


def test_adapter_save_needs_lora():
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="lora_save='adapter'.*lora_r > 0"):
        ModelConfig(name="tiny", lora_save="adapter")


def test_a_target_module_the_model_lacks_is_one_line_naming_what_it_has(isolated_cache):
    """--model.lora-target-modules foo_proj ended in peft's NoMatchingPeftModuleError traceback."""
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_model(ModelConfig(name="tiny", lora_r=4, lora_target_modules="foo_proj"))
    assert str(err.value).startswith("model.lora_target_modules='foo_proj': foo_proj is no module of this model; it "
                                     "has ")
    assert "q_proj" in str(err.value) and "lm_head" not in str(err.value)
    # one good name beside a typo trained only the good one, without a word
    with pytest.raises(ConfigError, match="'q_proj,c_attn': c_attn is no module of this model; it has down_proj"):
        load_model(ModelConfig(name="tiny", lora_r=4, lora_target_modules="q_proj,c_attn"))


@pytest.mark.parametrize("option", [{"lora_alpha": 32}, {"lora_dropout": 0.1}, {"lora_target_modules": "q_proj"}])
def test_a_lora_option_with_lora_off_is_refused(option):
    """--model.lora-alpha 32 without --model.lora-r trained all 135M weights at a LoRA learning rate."""
    from posttrain.errors import ConfigError

    (name, value), = option.items()
    with pytest.raises(ConfigError, match=rf"model.{name}=.*is a LoRA option, and LoRA is off \(model.lora_r=0"):
        ModelConfig(name="tiny", **option)
    assert getattr(ModelConfig(name="tiny", lora_r=8, **option), name) == value
