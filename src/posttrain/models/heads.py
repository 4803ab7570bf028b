"""Reward models: a causal-LM body with a scalar head, read at each sequence's last real token.

Saved format
    A plain transformers `AutoModelForSequenceClassification` directory with `num_labels=1`
    (for Llama: `LlamaForSequenceClassification`, the body plus `score = Linear(hidden, 1,
    bias=False)`), the tokenizer, and `reward_model.json` saying how it was trained and read
    (`{"kind": "bradley_terry", "pooling": "last_token"}`). Any transformers user can load it.

Reading a reward
    We run the body, apply `score` at every position (B, T, 1) and take the value at the last
    token whose attention_mask is 1 (`last_token_rewards`), for right and left
    padding alike. We do not use the model's own forward: transformers pools at the last token
    that is not `pad_token_id`, which is wrong when pad == eos (SmolLM2: the real eos at the end
    of every completion would look like padding) and wrong for left padding.

Starting from a causal LM
    Loading a causal-LM directory (e.g. an SFT run's final/) as a sequence classifier leaves
    `score` missing; we initialise it from N(0, 1/(hidden+1)) with a seeded generator, so the
    initial rewards are small and the same in every process.

LoRA
    Adapters on the body (arXiv:2106.09685), the `score` head fully trained (peft
    `modules_to_save`), merged into plain weights on save.

A value head on a policy (`SharedValueHead`)
    PPO's `value_model=shared`: Linear(hidden, 1) on a causal LM's final hidden states, the LM
    itself not copied; saved alone as `value_head.safetensors`.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError

from posttrain.config import ModelConfig
from posttrain.errors import ModelError
from posttrain.files import write_dir_atomic
from posttrain.models.load import (
    REWARD_MODEL_MARKER,
    enable_gradient_checkpointing,
    load_tokenizer,
    quiet_transformers,
    resolve_dtype,
    resolve_model_dir,
    unreadable_weights,
)
from posttrain.models.lora import apply_lora, is_lora, merged_copy, transformers_model

MARKER_FILE = REWARD_MODEL_MARKER
HEAD = "score"  # transformers' name for the scalar head of *ForSequenceClassification models


class RewardModel(torch.nn.Module):
    """`rm(input_ids, attention_mask) -> rewards (B,)`: a sequence classifier read at the last real token.

    A module (not a bare function) so that DistributedDataParallel can wrap it: DDP synchronises
    gradients only for forwards that go through its own `__call__`.
    """

    fsdp_forward_methods = ("token_values",)  # sharded (models/sharding.py), token_values gathers as forward does

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier  # a transformers *ForSequenceClassification, maybe inside peft

    @property
    def backbone(self) -> torch.nn.Module:
        """The transformers model whose layers compute token_values (the classifier)."""
        return self.classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return sequence_rewards(self.classifier, input_ids, attention_mask)

    def token_values(self, **inputs: Any) -> torch.Tensor:
        """The head's output at every position, (B, T) in float32, for a causal-LM-style batch (input_ids,
        attention_mask 2D or 4D, position_ids): PPO's value model reads its values from it (rl/batch.py)."""
        model = self.classifier.get_base_model() if is_lora(self.classifier) else self.classifier
        body = getattr(model, model.base_model_prefix)
        hidden = body(**inputs).last_hidden_state  # (B, T, H)
        # (B, T); sum over the head's one output is that output, as a new tensor: an FSDP2-sharded token_values
        # must not return a view
        return getattr(model, HEAD)(hidden).float().sum(-1)


def sequence_rewards(classifier: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar reward of each sequence (B,), read at its last real token; any padding side."""
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"expected input_ids and attention_mask of one shape (B, T), got "
                         f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
    model = classifier.get_base_model() if is_lora(classifier) else classifier
    body = getattr(model, model.base_model_prefix)
    # (B, T): positions from 0 at the first real token under left padding too (RoPE only sees differences,
    # but absolute-position models such as GPT-2 would shift)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state  # (B, T, H)
    values = getattr(model, HEAD)(hidden).squeeze(-1)  # (B, T)
    return last_token_rewards(values.float(), attention_mask)  # (B,)


def last_token_rewards(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The value head's output at each sequence's last real token: values (B, T) -> (B,).

    The index is that of the last nonzero in the mask, so it is right for both right padding
    ([1, 1, 1, 0] -> 2) and left padding ([0, 1, 1, 1] -> T - 1).
    """
    if values.shape != attention_mask.shape:
        raise ValueError(
            f"values {tuple(values.shape)} and attention_mask {tuple(attention_mask.shape)} disagree"
        )
    positions = torch.arange(values.shape[1], device=values.device)  # (T,)
    last_index = (attention_mask.long() * positions).argmax(dim=-1)  # (B,): first max wins ties
    rows = torch.arange(values.shape[0], device=values.device)  # (B,)
    return values[rows, last_index]  # (B,): a new tensor, not a view (an FSDP2-wrapped model must not return one)


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    """transformers logs a table of missing keys; a missing `score` is expected and handled here."""
    logger = logging.getLogger("transformers.modeling_utils")

    def drop_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    # a filter, not a level: transformers runs extra checks (and logs more) when this logger's level is raised
    logger.addFilter(drop_report)
    try:
        yield
    finally:
        logger.removeFilter(drop_report)


def load_classifier(path: Path, dtype: torch.dtype, seed: int = 0) -> tuple[torch.nn.Module, bool]:
    """`(classifier, new_head)`: a num_labels=1 sequence classifier from `path`; new_head is True when
    `path` had no score head (a causal LM) and one was initialised here."""
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    try:
        with _quiet_load_report():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise ModelError(f"{path}: cannot load as a sequence classifier: {unreadable_weights(e)}".replace("\n", " ")
                         ) from None
    missing = set(info["missing_keys"])
    head_keys = {k for k in missing if k.split(".")[0] == HEAD}
    if missing - head_keys:
        raise ModelError(f"{path}: weights missing from the checkpoint: {sorted(missing - head_keys)[:5]}")
    if not hasattr(model, HEAD):
        raise ModelError(f"{path}: {type(model).__name__} has no `{HEAD}` head; posttrain reads rewards from it")
    if head_keys:
        _init_head(getattr(model, HEAD), seed)
    return model, bool(head_keys)


@torch.no_grad()
def _init_head(head: torch.nn.Linear, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(head.weight.shape, generator=generator) / math.sqrt(head.in_features + 1)
    head.weight.copy_(weight)
    if head.bias is not None:
        head.bias.zero_()


def apply_reward_lora(classifier: torch.nn.Module, cfg: ModelConfig) -> torch.nn.Module:
    """LoRA adapters of rank cfg.lora_r on the body; the score head is trained in full."""
    return apply_lora(classifier, cfg, task_type="SEQ_CLS", modules_to_save=[HEAD])


def load_reward_model(cfg: ModelConfig, device: torch.device | str = "cpu", seed: int = 0) -> tuple[RewardModel, Any]:
    """`(RewardModel, tokenizer)` from a reward-model or causal-LM directory or name; LoRA when cfg.lora_r > 0.

    Left in eval mode, as from_pretrained leaves it; the caller chooses.
    """
    device = torch.device(device)
    path = resolve_model_dir(cfg.name)
    tokenizer = load_tokenizer(str(path))
    classifier, _ = load_classifier(path, resolve_dtype(cfg.dtype, device), seed)
    if classifier.config.pad_token_id is None:  # transformers' own pooling needs it to batch
        classifier.config.pad_token_id = tokenizer.pad_token_id
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(classifier)
    if cfg.lora_r > 0:
        classifier = apply_reward_lora(classifier, cfg)
    return RewardModel(classifier).to(device), tokenizer


def save_reward_model(model: RewardModel, tokenizer, out_dir: str | Path, marker: dict[str, Any]) -> Path:
    """Write the saved format above (LoRA merged into a copy), atomically; pass the unwrapped model."""
    plain = merged_copy(model.classifier)

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")

    return write_dir_atomic(Path(out_dir), write)


VALUE_HEAD = "value_head.safetensors"  # final/'s value head under ppo.value_model=shared


class SharedValueHead(torch.nn.Module):
    """`ppo.value_model=shared`: a scalar head, Linear(H, 1) in float32, on the policy's final hidden states (the
    design of TRL's AutoModelForCausalLMWithValueHead). The policy is referenced, not a submodule, so PolicyAndValue
    holds its backbone once (one copy in the optimizer and the checkpoint) and the head's H + 1 numbers beside it."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        lm_head = transformers_model(policy).get_output_embeddings()
        if lm_head is None:
            raise ModelError(f"ppo.value_model=shared: {type(transformers_model(policy)).__name__} has no LM head "
                             "whose input the value head could read; use --ppo.value-model policy")
        self.head = torch.nn.Linear(lm_head.weight.shape[-1], 1, dtype=torch.float32)  # H: what the LM head reads
        # zeros: V = 0 at the start, and while w = 0 the value loss's gradient into the body (dL/dV·w) is 0, so a
        # random head does not push the policy's features at the start; the head itself learns (dL/dw = dL/dV·h).
        # Deterministic, so there is nothing to seed.
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self._policy = (policy,)  # in a tuple: not registered as a submodule

    @property
    def backbone(self) -> torch.nn.Module:
        """The transformers model whose layers compute token_values (the policy)."""
        return self._policy[0]

    def token_values(self, **inputs) -> torch.Tensor:
        """The head on the policy body's final hidden states, (B, T) in float32: the values at sampling time
        (score_step, through rl/batch.py::completion_values), from the body alone, without the LM head."""
        lm = transformers_model(self._policy[0])  # peft's LoRA layers sit inside it, so the adapters act
        hidden = getattr(lm, lm.base_model_prefix)(**inputs).last_hidden_state  # (B, T, H)
        return self.head(hidden.float()).sum(-1)  # (B, T): its one output, as a new tensor (not a view)

    def train(self, mode: bool = True) -> "SharedValueHead":
        """eval() and train() reach the policy too: score_step reads the values in eval mode."""
        self._policy[0].train(mode)
        return super().train(mode)

    def save(self, path: Path) -> None:
        """`weight` (1, H) and `bias` (1,) as safetensors, the hidden size in the metadata."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(tensors, str(path), metadata={"kind": "ppo_value_head", "hidden_size": str(self.head.in_features),
                                                "reads": "the policy's final hidden state (last_hidden_state)"})
