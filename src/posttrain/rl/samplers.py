"""Which sampler an RL run samples with (GRPO, RLOO, PPO): the built-in one on the policy, or a vLLM engine
(`--rl.sampler vllm`, sampling/vllm_sampler.py) that gets the policy's weights after every update.

    check_sampler(cfg, d)                              # before anything is loaded: refuse what cannot work
    sampler = rollout_sampler(cfg, policy, tokenizer)  # ModelSampler, or a VLLMSampler holding the policy's weights
    engine = sampler if isinstance(sampler, VLLMSampler) else None
    ...update...
    metrics |= push_weights(engine, policy)            # {} for the built-in sampler
"""

from __future__ import annotations

import time

import torch

from posttrain.errors import ConfigError
from posttrain.models.load import resolve_model_dir
from posttrain.models.lora import transformers_model
from posttrain.sampling.sampler import ModelSampler
from posttrain.sampling.vllm_sampler import VLLMSampler, check_vllm_installed
from posttrain.training.distributed import Dist


def check_sampler(cfg, d: Dist) -> None:
    """Refuse, before anything is loaded, a vLLM sampler this run cannot use."""
    if cfg.rl.sampler != "vllm":
        return
    if d.enabled:
        raise ConfigError("rl.sampler=vllm: run one process, not torchrun: every process would start its own engine "
                          "on the same devices, and the weight push does not gather sharded (FSDP2) weights")
    if cfg.vllm.sleep_mode and d.device.type != "cuda":
        raise ConfigError("vllm.sleep_mode: vLLM has a sleep mode on GPUs only (CUDA, ROCm); drop it on CPU")
    check_vllm_installed()


def rollout_sampler(cfg, policy: torch.nn.Module, tokenizer) -> ModelSampler | VLLMSampler:
    """The built-in sampler on the policy, or (rl.sampler=vllm) a vLLM engine on the model's directory holding the
    policy's current weights (a resumed run's, LoRA's merged)."""
    if cfg.rl.sampler == "builtin":
        return ModelSampler(policy, tokenizer, batch_size=cfg.rl.sample_batch or cfg.rl.prompts_per_step *
                            cfg.rl.group_size)
    longest = cfg.data.max_prompt_length + cfg.sampling.max_new_tokens
    model_max = getattr(transformers_model(policy).config, "max_position_embeddings", None) or longest
    engine = VLLMSampler(resolve_model_dir(cfg.model.name), tokenizer, next(policy.parameters()).dtype,
                         max_model_len=cfg.vllm.max_model_len or min(longest, model_max),
                         gpu_memory_utilization=cfg.vllm.gpu_memory_utilization, sleep_mode=cfg.vllm.sleep_mode,
                         seed=cfg.run.seed)
    engine.load_weights(policy)
    return engine


def push_weights(engine: VLLMSampler | None, policy: torch.nn.Module) -> dict[str, float]:
    """After an update: the policy's weights into the vLLM engine (nothing for the built-in sampler, which samples
    the policy itself), and the time it took as `perf/weight_sync_seconds`."""
    if engine is None:
        return {}
    t0 = time.perf_counter()
    engine.load_weights(policy)
    return {"perf/weight_sync_seconds": time.perf_counter() - t0}
