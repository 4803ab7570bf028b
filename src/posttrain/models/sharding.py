"""FSDP2 (`torch.distributed.fsdp.fully_shard`): a model's weights, gradients and optimizer state split over the
processes of a torchrun job, and the three things a sharded model needs besides its training step.

- `shard(model, ...)` shards each transformer block (the classes transformers lists in `_no_split_modules`, e.g.
  LlamaDecoderLayer) as one unit and the rest (embeddings, final norm, LM head, value or score heads) as the root
  unit, in place. Every process must call it, in the same order for every model of the run. A forward or
  backward then all-gathers each unit's weights just before it runs and frees them after (ZeRO-3,
  arXiv:1910.02054): each process holds 1/world of the model between uses. So every process must run the same
  number of forwards and backwards of a sharded model, in the same order (the engines equalise their micro-batch
  counts for that).
- `gathered(model)`: inside the block the whole model is gathered on every process and no forward communicates,
  so processes may run different numbers of no-grad forwards (sampling, whose lengths differ; held-out scoring of
  each process's share). The price is one full copy of the weights per process for the block's duration.
- `full_model(model)` gathers the weights once more into a plain twin (a structural copy made at `shard` time
  with its weights on the meta device, so it costs no memory until then) on the main process: what `final/`
  saves, with transformers or peft as usual.

Under plain DDP or one process none of this applies: `gathered` is a no-op and `full_model` is the model itself.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class _Sharded:
    twin: torch.nn.Module | None  # main process only: the model's structure, weights on the meta device
    reshard: dict[torch.nn.Module, bool]  # each unit's reshard_after_forward, restored after `gathered`


_SHARDED: weakref.WeakKeyDictionary[torch.nn.Module, _Sharded] = weakref.WeakKeyDictionary()


def block_classes(model: torch.nn.Module) -> set[str]:
    """Class names of the transformer blocks in `model`: every `_no_split_modules` of the transformers models in it
    (through peft's and posttrain's wrappers)."""
    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    return names


def shard(model: torch.nn.Module, reshard_after_forward: bool = True, mixed_precision: str = "none",
          is_main: bool = True) -> torch.nn.Module:
    """Shard `model` in place over the default process group (see the module docstring) and return it.

    `mixed_precision="bf16"`: forward and backward compute in bfloat16 from float32 weights, and gradients are
    reduced in float32 (FSDP2's MixedPrecisionPolicy); "none": in the weights' own dtype. `reshard_after_forward`
    False keeps a block's gathered weights from its forward until its backward (one all-gather fewer per block
    and step, more memory). Call it before the optimizer is built: sharding replaces the parameters."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    twin = None
    if is_main:  # a twin without weights: every parameter a meta tensor, buffers (rotary tables) real copies
        memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
                for p in model.parameters()}
        twin = copy.deepcopy(model, memo)
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if mixed_precision == "bf16" else MixedPrecisionPolicy())
    blocks = block_classes(model)
    units = [m for m in model.modules() if type(m).__name__ in blocks]
    if not units:
        raise ValueError(f"{type(model).__name__}: no transformer block to shard (no _no_split_modules); "
                         "use --dist.strategy ddp")
    # each model in `model` is a unit of its own too (embeddings, norm, heads), so that it can be called by itself
    # (PPO scores with its value model alone, outside the policy-and-value module)
    units += [m for m in outermost_models(model) if m is not model]
    for m in [*units, model]:
        fully_shard(m, reshard_after_forward=reshard_after_forward, mp_policy=policy)
        for name in getattr(m, "fsdp_forward_methods", ()):  # methods that run the module as forward does
            register_fsdp_forward_method(m, name)
    # FSDP2 takes as its root the first unit to run a forward; make it the whole model now, whatever runs first.
    # The root keeps its weights gathered after its forward (they are needed first in the backward).
    model._get_fsdp_state()._lazy_init()
    reshard = {model: False} | {m: reshard_after_forward for m in units}
    _SHARDED[model] = _Sharded(twin, reshard)
    return model


def outermost_models(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The models in `model` that no other one in it holds: transformers models (PreTrainedModel) and modules that
    name `fsdp_forward_methods` (methods other than forward that run them, as RewardModel.token_values)."""
    from transformers import PreTrainedModel

    found: list[torch.nn.Module] = []

    def visit(m: torch.nn.Module) -> None:
        if isinstance(m, PreTrainedModel) or hasattr(m, "fsdp_forward_methods"):
            found.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return list({id(m): m for m in found}.values())  # a model reached twice (a shared backbone) once


def _info(model: torch.nn.Module) -> _Sharded | None:
    """The sharding of `model`, or of the sharded model that holds it (PPO's policy inside policy-and-value)."""
    if model in _SHARDED:
        return _SHARDED[model]
    return next((info for root, info in _SHARDED.items() if any(m is model for m in root.modules())), None)


def is_sharded(model: torch.nn.Module) -> bool:
    return _info(model) is not None


@contextmanager
def gathered(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block `model`'s weights are whole on every process and its forwards do not communicate (see
    the module docstring); for a part of a sharded model, the whole of that model is gathered. A no-op for a model
    `shard` did not shard. Every process must enter it together."""
    info = _info(model)
    if info is None:
        yield model
        return
    for m in info.reshard:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m, after in info.reshard.items():
            m.reshard()
            m.set_reshard_after_forward(after, recurse=False)


def full_model(model: torch.nn.Module, is_main: bool = True) -> torch.nn.Module | None:
    """The trained model as a plain module with whole weights on the CPU: on the main process a sharded model's
    twin with the gathered weights (every process must call this together), else None; an unsharded model as
    it is."""
    info = _SHARDED.get(model)
    if info is None:
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return None
    twin = info.twin
    twin.load_state_dict(state, strict=True, assign=True)
    for m in twin.modules():  # assign=True gave tied weights (embeddings and LM head) one tensor each: tie again
        if hasattr(m, "tie_weights") and getattr(getattr(m, "config", None), "tie_word_embeddings", False):
            m.tie_weights()
    return twin
