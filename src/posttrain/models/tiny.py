"""The built-in tiny models: real transformers models at random init, with a
byte-level BPE tokenizer trained here, locally, in about a second.

The Llama (`--model tiny`) is what every command uses by default, so that the
whole post-training loop runs on a laptop in minutes with no download. The
tokenizer splits every digit into its own token (arithmetic is the built-in
task) and carries ChatML special tokens and the same chat template shape as
SmolLM2. The Qwen2 (`tiny-qwen2-base`) stands for a base model of another
family: the same tokenizer, but no chat template and `<|endoftext|>` as its
eos and pad token, as Qwen2 base models have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from posttrain.data.tokenize import CHATML

CHAT_TEMPLATE = CHATML  # the template family of SmolLM2-Instruct
FAMILIES = ("llama", "qwen2-base")  # an instruct Llama with ChatML; a base Qwen2 without a chat template
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TinySize:
    """Width and depth of a tiny Llama. Parameter counts are for the ~400-token vocabulary."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 256


SIZES = {
    "tiny": TinySize(128, 2, 4, 512),  # ~0.5M parameters: the demo default
    "small": TinySize(256, 4, 4, 1024),  # ~3M
    "10m": TinySize(384, 6, 6, 1536, 512),  # ~10M, for MFU benchmarks
    "30m": TinySize(512, 10, 8, 2048, 512),  # ~30M, for MFU benchmarks
}


def _corpus(seed: int = 0) -> list[str]:
    """A small deterministic corpus: arithmetic in the built-in tasks' phrasing plus everyday English."""
    rng = random.Random(seed)
    words = (
        "the a an is are was be to of and in that it for on with as at by from this what which who how why "
        "answer question number sum difference product plus minus times equals result step first then "
        "so therefore because add subtract multiply carry digit compute solve let us think write only "
        "please give short long good bad better worse correct wrong yes no hello thanks help you your i "
        "model user assistant system reply response prompt follow instruction list name city country "
        "capital paris france water fire earth sky blue green red one two three four five six seven "
        "eight nine ten hundred thousand teacher student learn explain example simple clear true false"
    ).split()
    lines = []
    for _ in range(3000):
        a, b = rng.randint(0, 9999), rng.randint(0, 9999)
        op = rng.choice("+-*")
        lines.append(f"What is {a} {op} {b}? The answer is {a + b if op == '+' else a - b if op == '-' else a * b}.")
    for _ in range(3000):
        n = rng.randint(3, 14)
        s = " ".join(rng.choice(words) for _ in range(n))
        lines.append(s[0].upper() + s[1:] + rng.choice(".?!:,") + " #### " + str(rng.randint(-99, 999)))
    return lines


def build_tokenizer(vocab_size: int = 512, seed: int = 0, chat: bool = True):
    """Train the byte-level BPE tokenizer and wrap it as a transformers fast tokenizer; `chat`: with the ChatML
    template and `<|im_end|>` as eos, else (a base model's) no template and `<|endoftext|>` as eos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"] if chat else ["<|im_start|>", "<|im_end|>"],
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def build_tiny(out_dir: str | Path, size: str = "tiny", seed: int = 0, family: str = "llama") -> Path:
    """Write a tiny random-init model of `family` (FAMILIES) and its tokenizer to `out_dir` (a normal HF
    directory)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if size not in SIZES:
        raise ValueError(f"unknown tiny size {size!r} (choose one of {', '.join(SIZES)})")
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r} (choose one of {', '.join(FAMILIES)})")
    s = SIZES[size]
    llama = family == "llama"
    tokenizer = build_tokenizer(seed=seed, chat=llama)
    config_class, model_class = (LlamaConfig, LlamaForCausalLM) if llama else (Qwen2Config, Qwen2ForCausalLM)
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers,
        num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_attention_heads,
        max_position_embeddings=s.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
