"""The reference model: the frozen starting policy that DPO's implicit reward and the KL terms of PPO and
GRPO measure the policy against, and the cache of log-probs computed under it.

`Reference(model, keep_copy)` runs a function on the reference, in eval mode and without gradients:
- with LoRA, the policy itself with its adapters switched off: the frozen base weights ARE the starting
  policy, so no second copy of the weights is needed (`models.lora.reference_context`);
- without LoRA and `keep_copy`, a frozen deep copy made now (one more copy of the weights for the run);
- without LoRA and not `keep_copy`, the live model as it is now: valid only until its first update, so
  use it to precompute reference log-probs before training (and before a checkpoint is loaded).

Precomputed log-probs are cached in the run directory (`REFERENCE_CACHE`, safetensors) under a fingerprint of
the token ids and of what else decides them (model, dtype, reduction), so a resumed run reuses them and a
run on other data or another model computes them again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from posttrain.files import write_file_atomic
from posttrain.models.lora import is_lora, reference_context, unwrap
from posttrain.models.sharding import shard

log = logging.getLogger(__name__)

T = TypeVar("T")
REFERENCE_CACHE = "reference_logps.safetensors"


class Reference:
    """The frozen starting policy of `model` (see the module docstring); call it with `fn(reference_module)`."""

    def __init__(self, model: torch.nn.Module, keep_copy: bool):
        base = unwrap(model)
        self.lora = is_lora(base)
        self.copy = keep_copy and not self.lora  # a frozen copy of its own, not the live model
        self._module = copy.deepcopy(base).requires_grad_(False) if self.copy else base

    def shard(self, reshard_after_forward: bool = True, mixed_precision: str = "none") -> None:
        """Shard the frozen copy, when there is one, as the policy is (`models.sharding.shard`); with LoRA the
        reference is the sharded policy itself. Every process must call it."""
        if self.copy:
            shard(self._module, reshard_after_forward, mixed_precision, is_main=False)

    @torch.no_grad()
    def __call__(self, fn: Callable[[torch.nn.Module], T]) -> T:
        module = self._module
        was_training = module.training
        module.eval()
        try:
            if self.lora:
                with reference_context(module):
                    return fn(module)
            return fn(module)
        finally:
            module.train(was_training)


def precompute_logps(
    splits: dict[str, int], batches: Callable[[str], Iterable[tuple[list[int], Any]]],
    score: Callable[[Any], Sequence[torch.Tensor]], names: Sequence[str],
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> dict[str, torch.Tensor]:
    """`{split.name: (N,)}` for every split of N examples: `score(batch)` gives one (B,) tensor per name for the
    examples `indices` of each `(indices, batch)` in `batches(split)`. Under DDP each process scores its share
    and `reduce` sums the (N,) tensors over processes (zeros elsewhere), so every process gets every value."""
    out = {}
    for split, n in splits.items():
        values = {name: torch.zeros(n, dtype=torch.float64) for name in names}
        for indices, batch in batches(split):
            for name, v in zip(names, score(batch)):
                values[name][indices] = v.double().cpu()
        for name in names:
            out[f"{split}.{name}"] = reduce(values[name]).float().cpu()
    return out


def fingerprint(token_ids: dict[str, Iterable[Any]], **what: str) -> str:
    """sha256 of every split's token ids (one JSON-able item per example) and of what else decides the
    log-probs (model, dtype, reduction)."""
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    for split in sorted(token_ids):
        digest.update(split.encode())
        for ids in token_ids[split]:
            digest.update(json.dumps(ids).encode())
    return digest.hexdigest()


def save_logps(path: Path, logps: dict[str, torch.Tensor], key: str) -> None:
    """Write `{name: (N,)}` with its fingerprint, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in logps.items()}
    write_file_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"fingerprint": key}))


def load_logps(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached log-probs when `path` exists and was made with fingerprint `key`, else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if (f.metadata() or {}).get("fingerprint") != key:
            log.warning("%s was made from other data or another model; computing the reference log-probs again", path)
            return None
        return {k: f.get_tensor(k) for k in f.keys()}
