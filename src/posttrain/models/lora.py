"""LoRA adapters (arXiv:2106.09685) through peft: add them, switch them off, merge them for saving; and
the two unwrappers that see through DDP (`unwrap`) and through peft as well (`transformers_model`).

With LoRA the frozen base weights are the initial policy, so switching the adapters off gives the
reference model of DPO or the KL penalty for free, without a second copy of the weights.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from posttrain.config import ModelConfig
from posttrain.errors import ConfigError


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a DDP wrapper (peft's adapters, if any, stay on)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a DDP wrapper and peft's adapters (its config, forward, attention)."""
    model = unwrap(model)
    return model.get_base_model() if is_lora(model) else model


def apply_lora(
    model: torch.nn.Module, cfg: ModelConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None
) -> torch.nn.Module:
    """Wrap `model` with trainable LoRA adapters of rank `cfg.lora_r`; every base weight is frozen.

    peft initialises B to zero, so the wrapped model starts out computing exactly the base model.
    A reward model passes task_type="SEQ_CLS" (peft's causal-LM wrapper needs generation methods a
    classifier lacks) and its score head in `modules_to_save`, which is then trained in full.
    """
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules.strip()
    names = None if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    if names:  # peft refuses only a list of which no name matches: a typo beside a good name trained without a word
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        if unmatched := [n for n in names if n not in present and not any(n in full for full, _ in
                                                                            model.named_modules())]:
            raise ConfigError(f"model.lora_target_modules={cfg.lora_target_modules!r}: {', '.join(unmatched)} "
                              f"{'is' if len(unmatched) == 1 else 'are'} no module of this model; it has "
                              f"{_linear_names(model)} (or all-linear)")
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        # "all-linear" is peft's keyword for every linear layer except the output head.
        target_modules=targets if names is None else names,
        modules_to_save=modules_to_save,
        task_type=task_type,
    )
    from peft.utils.error import NoMatchingPeftModuleError

    try:
        with quiet_peft():
            return get_peft_model(model, lora)
    except NoMatchingPeftModuleError:
        raise ConfigError(f"model.lora_target_modules={cfg.lora_target_modules!r}: no such module in the model; it "
                          f"has {_linear_names(model)} (or all-linear)") from None


def _linear_names(model: torch.nn.Module) -> str:
    """The names LoRA can target: the linear layers' own names (q_proj, ...), the output head left out."""
    return ", ".join(sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                             if isinstance(m, torch.nn.Linear) and "." in name}))


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated `is_gradient_checkpointing` while wrapping or loading adapters: a
    FutureWarning on every LoRA run that no user can act on (peft's issue, not theirs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@contextmanager
def reference_context(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block, `model` computes the frozen base model: its LoRA adapters are switched off.

    Only for LoRA (peft) models; a full fine-tune has no frozen base inside it, so the recipe must keep a
    separate frozen copy as the reference, and this raises TypeError to say so. Pass the unwrapped model
    (not DDP). Gradients are not disabled here: wrap the forward in `torch.no_grad()` as usual.
    """
    if not is_lora(model):
        raise TypeError(
            f"reference_context needs a LoRA (peft) model, got {type(model).__name__}; "
            "without LoRA keep a separate frozen copy of the initial model as the reference"
        )
    with model.disable_adapter():
        yield model


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model with the LoRA updates folded into its weights (W + alpha/r * B A).

    Merges into a deep copy, so `model` keeps its adapters and can go on training (one extra copy of the
    weights for as long as the result lives). A model without LoRA is returned as is.
    """
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()
