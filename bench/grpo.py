"""posttrain GRPO against TRL's GRPOTrainer on the same model, prompts, reward and settings.

    python bench/grpo.py                                  # writes the "GRPO" section of bench/RESULTS.md
    python bench/grpo.py --model tiny-30m                 # ~30M parameters (its SFT start is trained once, slow)
    python bench/grpo.py --init untrained --eval-prompts 0    # speed only, from the raw random-init model
    python bench/grpo.py --steps 2 --repeats 1 --eval-prompts 20 --no-write --threads 1   # a quick look

What it measures: (a) completions/s = completions sampled / wall time of the training loop (no model loading,
no saving): posttrain's `time/train_seconds` less `time/checkpoint_seconds` and less any held-out evaluation
inside the loop (`perf/eval_seconds` rows; none here: the bench measures accuracy itself, below); TRL's
`train_runtime`, with its evaluation off and nothing saved. (b) Held-out accuracy before and after training,
measured one way for both sides: each side's saved final model loaded by posttrain and answered greedily through
posttrain's sampler (`posttrain.eval.accuracy.evaluate_accuracy`, at most 24 new tokens, stop at "."), scored by
posttrain's `numeric` reward, on the first `--eval-prompts` prompts of
`builtin:arithmetic/heldout?ops=+&digits=2&pad=0.7`; both after the same number of sampled completions.

Setup, the same on both sides (`posttrain_config` and `trl_config` below; `check_same_settings` compares them
field by field before every TRL run, and tests/bench/test_grpo_settings.py checks that they agree):

- Model: the built-in tiny Llama (`--model tiny`, 0.6M parameters, or `tiny-30m`, 42M), fp32, no
  gradient checkpointing, no torch.compile, no vLLM, one process. Both sides start from the SAME weights:
  `--init sft` (default) is the demo's GRPO start: the demo's SFT stage (src/posttrain/demo.py::sft_stage, 1500
  steps, a checkpoint every 25) and its weak-checkpoint stage (`weak_sft_stage`: the checkpoint that gets 15-30%
  of 100 training problems right), trained once and cached under $POSTTRAIN_CACHE/bench/ (`tiny` only).
  `--init untrained` starts from the raw random-init model (for speed-only runs).
- Prompts: the train split of `builtin:arithmetic?ops=+&digits=2&pad=0.7` (7600 prompts), written once in TRL's
  conversational prompt format, `{"prompt": [{"role": "user", "content": ...}], "answer": ...}`, so both sides
  render it with the model's chat template (the bench checks that TRL's prompt token ids are posttrain's). The
  prompts of each step are the same on both sides: TRL reads the rows in posttrain's prompt order
  (`rl.engine.PromptOrder`, seed 0) without shuffling (`shuffle_dataset=False`); checked after each TRL run.
- Reward: posttrain's `resolve_reward("numeric")` (the completion's final number equals `answer`), on TRL's side
  wrapped in TRL's reward-function signature and scored through posttrain's `score_completions`: one scorer.
- Group size G = 8 (TRL `num_generations`), 32 prompts per step: one optimizer step = 32 x 8 = 256 completions
  (TRL: `per_device_train_batch_size` 64 completions x `gradient_accumulation_steps` 4, `steps_per_generation` 4,
  so `generation_batch_size` 256 and one generation per optimizer step; `num_iterations` 1 = posttrain's one pass,
  one minibatch; posttrain's `rl.micro_batch` 8 groups = the same 64 completions per forward/backward).
- Sampling: at most 24 completion tokens, temperature 1, top_p 1, top_k 0 (set explicitly on both), no min_p,
  no repetition penalty. Stop at ".": TRL's transformers generation path cannot take stop strings (it never passes
  the tokenizer to `generate`, which `stop_strings` requires: "we could not locate a tokenizer"), so on TRL's side
  the "." token is added to the model's `generation_config.eos_token_id`, which TRL reads both to end generation
  and to mask completions. With this tokenizer that rule is exactly posttrain's stop string: "." is one token
  (id 16) and no other token contains "." (`end_token_ids` checks). Both sides keep the "." token in the trained
  completion; only the reward's text differs ("68." on TRL's side, "68" on posttrain's, the same score).
- Update: AdamW lr 3e-4, the demo's GRPO setting (betas 0.9/0.999, eps 1e-8, no weight decay), cosine to 0 over the run's steps, no warm-up
  on either side, gradient clipping at 1; KL beta 0 (no reference model on either side); clip epsilon 0.2 both ways;
  token-level loss aggregation (TRL `loss_type="dapo"`, posttrain `--rl.loss-aggregation token`: the mean over
  every completion token of the step); advantages scaled by the group's std (unbiased, + 1e-4, both sides).
- Runs: each in a fresh process, alternating A B A B, medians over `--repeats`.

What is not the same, and cannot be made so: the random draws. Both sides seed 0 but sample with different RNGs
(posttrain one stream per prompt, TRL `generate` on one global generator), so the completions differ and the
accuracy figures compare two draws of the same procedure. posttrain's importance ratio uses the sampler's log-probs
(ratio ~1 up to float error); TRL, with one generation per optimizer step, uses the current log-probs detached
(exactly 1). posttrain prefills each prompt once per group (its KV cache repeated G times) and puts each group
through the update as one row with a block mask (prefix sharing); TRL repeats the prompt G times: those are
posttrain's defaults, part of what is timed.

Sampling vs update seconds: posttrain logs both (`perf/sample_seconds`, `perf/update_seconds`); for TRL the bench
times `GRPOTrainer._generate` (prompt tokenization, `generate`, decoding) as sampling, and counts as update the rest
of `train_runtime` outside `_generate_and_score_completions` (forward, backward, optimizer step and the Trainer's
own per-step work). "other" is what remains of the loop (scoring, advantages, batching, logging). End-to-end
also counts model loading, tokenization (posttrain tokenizes all 7600 prompts before its loop, TRL those it samples,
inside its loop) and saving final/; posttrain then writes its run report (report.html, with matplotlib figures:
most of its end-to-end time on a short run), TRL nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, peak_rss_mb, posttrain_loop_seconds, rss_mb, threads_note, update_results  # noqa: E402

SIDES = ("posttrain", "trl")
LABELS = {"posttrain": "posttrain grpo", "trl": "TRL GRPOTrainer"}
TRAIN = "builtin:arithmetic?ops=+&digits=2&pad=0.7"
HELDOUT = "builtin:arithmetic/heldout?ops=+&digits=2&pad=0.7"
SEED = 0
GROUP_SIZE = 8
PROMPTS_PER_STEP = 32
MICRO_GROUPS = 8  # groups per forward/backward: 64 completions
MAX_COMPLETION_TOKENS = 24
STOP = "."
LR = 3e-4  # the demo's GRPO stage (src/posttrain/demo.py::grpo_stage), cosine
EPSILON = 0.2


@dataclass
class BenchConfig:
    """posttrain GRPO vs TRL GRPOTrainer: completions/s and held-out accuracy gain at equal settings."""

    model: str = "tiny"
    """Built-in model both sides train: `tiny` (0.6M parameters) or `tiny-30m` (42M parameters by count; same
    tokenizer; with `--init untrained` only, for speed)."""
    init: Literal["sft", "untrained"] = "sft"
    """Starting weights of both sides: `sft`, the demo's weak SFT checkpoint of `tiny` (15-30% of training problems
    right; trained once, a few minutes, and cached under $POSTTRAIN_CACHE/bench/), or `untrained`, the raw
    random-init model (for speed-only runs: its reward is almost always 0, so little is learned)."""
    steps: int = 60
    """Optimizer steps per run; each samples 32 prompts x 8 completions."""
    repeats: int = 2
    """Runs per side, alternating; the table reports medians."""
    threads: int = 0
    """torch threads in each run (0 leaves torch's default, one per core). On a machine busy with other jobs use 1."""
    eval_prompts: int = 200
    """Held-out prompts for the accuracy before and after training (greedy); 0 measures no accuracy."""
    write: bool = True
    """Write the results into bench/RESULTS.md."""


@dataclass
class Result:
    """One timed run, measured inside its own process."""

    side: str
    completions: int
    loop_seconds: float
    sample_seconds: float
    update_seconds: float
    end_to_end_seconds: float  # model loading, training, saving final/
    rewards: list[float]  # mean training reward of each step
    lengths: list[float]  # mean completion tokens of each step
    accuracy: float | None  # held-out accuracy of the saved final model
    rss_after_imports_mb: float
    peak_rss_mb: float  # before the held-out evaluation
    extra: dict = field(default_factory=dict)

    @property
    def completions_per_second(self) -> float:
        return self.completions / self.loop_seconds

    @property
    def other_seconds(self) -> float:
        return self.loop_seconds - self.sample_seconds - self.update_seconds


# -- data and starting weights -----------------------------------------------------------------------------


def prepare(cfg: BenchConfig, folder: Path) -> dict:
    """Write the prompts (all of them, for posttrain; the run's steps in posttrain's order, for TRL), the token ids
    TRL must produce, and the starting weights; measure their held-out accuracy."""
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.models.load import load_tokenizer
    from posttrain.rl.engine import PromptOrder
    from posttrain.rl.setup import load_prompts

    init = starting_weights(cfg)
    rows = [{"prompt": [{"role": m.role, "content": m.content} for m in p.prompt], "answer": p.reference["answer"]}
            for p in load_records(TRAIN, accept=(Prompt,))]
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    order = PromptOrder(len(rows), PROMPTS_PER_STEP, SEED)
    steps = [order.step(s) for s in range(cfg.steps)]
    trl_rows = folder / "prompts_in_posttrain_order.jsonl"
    trl_rows.write_text("".join(json.dumps(rows[i]) + "\n" for step in steps for i in step))
    _, ids = load_prompts(str(prompts), load_tokenizer(str(init)), None, 512)  # as posttrain's GRPO tokenizes
    expected = folder / "expected.json"
    expected.write_text(json.dumps({
        "ids": {rows[i]["prompt"][-1]["content"]: ids[i] for step in steps for i in step},
        "steps": [sorted(rows[i]["prompt"][-1]["content"] for i in step) for step in steps]}))
    before = in_fresh_process(heldout_accuracy, str(init), cfg.eval_prompts, cfg.threads) if cfg.eval_prompts else None
    return {"prompts": str(prompts), "trl_rows": str(trl_rows), "expected": str(expected), "n_prompts": len(rows),
            "init": str(init), "accuracy_before": before, "params": in_fresh_process(parameter_count, str(init))}


def starting_weights(cfg: BenchConfig) -> Path:
    """The model both sides start from: the raw built-in model, or the demo's weak SFT checkpoint (trained once and
    cached; `tiny` only, as the demo trains `tiny`)."""
    from posttrain.models.load import cache_dir, resolve_model_dir

    base = resolve_model_dir(cfg.model)
    if cfg.init == "untrained":
        return base
    if cfg.model != "tiny":
        raise SystemExit(f"--init sft is the demo's weak SFT checkpoint of `tiny`; for {cfg.model} use --init untrained")
    folder = cache_dir() / "bench" / f"grpo-init-demo-{_source_hash()}"
    if not (folder / "sft-weak" / "final").is_dir():
        print(f"training the demo's SFT once and picking its weak checkpoint, into {folder}", flush=True)
        t0 = time.perf_counter()
        in_fresh_process(train_sft, str(folder), cfg.threads)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder / "sft-weak" / "final"


def _source_hash() -> str:
    """Of the demo's SFT and checkpoint-picking code: a change to them trains a new start instead of reusing a stale
    one."""
    import inspect

    from posttrain import demo

    code = inspect.getsource(demo.sft_stage) + inspect.getsource(demo.weak_sft_stage)
    return hashlib.sha256(code.encode()).hexdigest()[:8]


def train_sft(folder: str, threads: int) -> None:
    """The demo's SFT stage and its weak-checkpoint stage (src/posttrain/demo.py): the checkpoint the demo's GRPO
    stage starts from, 15-30% right on training problems."""
    import torch

    from posttrain.demo import DemoConfig, sft_stage, weak_sft_stage

    if threads:
        torch.set_num_threads(threads)
    cfg = DemoConfig(output_dir=folder, progress=False, seed=SEED)
    result, _ = sft_stage(cfg)
    weak, _ = weak_sft_stage(cfg, result.run_dir)
    print(f"  {weak.result}", flush=True)
    shutil.rmtree(Path(folder) / "sft" / "checkpoints", ignore_errors=True)  # only sft-weak/final is used


def heldout_accuracy(model_dir: str, n: int, threads: int = 0) -> float:
    """Greedy accuracy of the model in `model_dir` on the first n held-out prompts: posttrain's sampler (at most
    24 new tokens, stop at "."), scored by the `numeric` reward; the same measurement for every model."""
    import torch

    from posttrain.config import ModelConfig, SamplingParams
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.eval.accuracy import evaluate_accuracy
    from posttrain.models.load import load_model
    from posttrain.rewards.functions import resolve_reward

    if threads:
        torch.set_num_threads(threads)
    model, tokenizer = load_model(ModelConfig(name=model_dir, dtype="float32"))
    model.eval()
    greedy = SamplingParams(max_new_tokens=MAX_COMPLETION_TOKENS, temperature=0.0, stop=(STOP,))
    prompts = load_records(HELDOUT, accept=(Prompt,), limit=n)
    return evaluate_accuracy(model, tokenizer, prompts, resolve_reward("numeric"), greedy).accuracy


def parameter_count(model_dir: str) -> int:
    from posttrain.config import ModelConfig
    from posttrain.models.load import count_parameters, load_model

    return count_parameters(load_model(ModelConfig(name=model_dir))[0])[1]


# -- the two configurations ------------------------------------------------------------------------------------


def posttrain_config(cfg: BenchConfig, prompts: str, init: str, out: str, threads: int):
    """posttrain's GRPO config for the bench (the module docstring's settings)."""
    from posttrain.config import ModelConfig, OptimConfig, RunConfig, SamplingParams
    from posttrain.recipes.grpo import GRPOConfig, GRPOSettings
    from posttrain.rl.setup import PromptDataConfig, RLConfig

    return GRPOConfig(
        model=ModelConfig(name=init, dtype="float32", gradient_checkpointing=False),
        data=PromptDataConfig(train=prompts, eval_prompts=0),  # accuracy is measured by the bench, the same for both
        sampling=SamplingParams(max_new_tokens=MAX_COMPLETION_TOKENS, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
                                stop=(STOP,)),
        optim=OptimConfig(lr=LR, weight_decay=0.0, betas=(0.9, 0.999), schedule="cosine", warmup_steps=0,
                          min_lr_ratio=0.0, max_grad_norm=1.0, max_steps=cfg.steps),
        run=RunConfig(name="grpo", output_dir=out, device="cpu", seed=SEED, progress=False, log_every=1,
                      trackers=(), threads=threads),  # TRL's thread count: posttrain would pick fewer on a busy machine
        rl=RLConfig(reward="numeric", group_size=GROUP_SIZE, prompts_per_step=PROMPTS_PER_STEP,
                    micro_batch=MICRO_GROUPS, updates_per_batch=1, minibatches=1, eps_low=EPSILON, eps_high=EPSILON,
                    loss_aggregation="token", kl_beta=0.0),
        grpo=GRPOSettings(scale="group"),
    )


def trl_config(cfg: BenchConfig, out: str):
    """TRL's GRPOConfig at the same settings (TRL's defaults for everything not named)."""
    from trl import GRPOConfig

    accumulation = PROMPTS_PER_STEP // MICRO_GROUPS
    return GRPOConfig(
        output_dir=out, use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False, torch_compile=False,
        use_vllm=False, report_to="none", save_strategy="no", eval_strategy="no", logging_steps=1,
        disable_tqdm=True, log_completions=False, seed=SEED, max_steps=cfg.steps,
        per_device_train_batch_size=MICRO_GROUPS * GROUP_SIZE, gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation, num_generations=GROUP_SIZE, num_iterations=1,
        shuffle_dataset=False,  # the rows are in posttrain's prompt order
        max_completion_length=MAX_COMPLETION_TOKENS, temperature=1.0, top_p=1.0, top_k=0, min_p=None,
        repetition_penalty=1.0, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        beta=0.0, epsilon=EPSILON, epsilon_high=EPSILON, loss_type="dapo", scale_rewards="group",
        importance_sampling_level="token", mask_truncated_completions=False,
    )


def posttrain_settings(c) -> dict:
    """The settings the comparison must hold equal, read from posttrain's GRPOConfig."""
    return {
        "group size": c.rl.group_size, "completions per step": c.rl.prompts_per_step * c.rl.group_size,
        "completions per forward": c.rl.micro_batch * c.rl.group_size, "passes per step": c.rl.updates_per_batch,
        "optimizer steps per step": c.rl.minibatches, "steps": c.optim.max_steps,
        "max completion tokens": c.sampling.max_new_tokens, "temperature": c.sampling.temperature,
        "top_p": c.sampling.top_p, "top_k": c.sampling.top_k, "min_p": c.sampling.min_p,
        "lr": c.optim.lr, "schedule": f"{c.optim.schedule} to {c.optim.min_lr_ratio:g}",
        "warmup steps": c.optim.warmup_steps, "weight decay": c.optim.weight_decay, "betas": tuple(c.optim.betas),
        "max grad norm": c.optim.max_grad_norm, "kl beta": c.rl.kl_beta, "eps": (c.rl.eps_low, c.rl.eps_high),
        "loss aggregation": c.rl.loss_aggregation, "reward scaling": c.grpo.scale,
        "fp32": c.model.dtype == "float32", "gradient checkpointing": c.model.gradient_checkpointing,
        "seed": c.run.seed,
    }


def trl_settings(a) -> dict:
    """The same settings read from TRL's GRPOConfig (after its __post_init__ resolved them)."""
    aggregation = {"dapo": "token", "grpo": "sequence", "dr_grpo": "constant"}.get(a.loss_type, a.loss_type)
    schedule = getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type)
    return {
        "group size": a.num_generations, "completions per step": a.generation_batch_size,
        "completions per forward": a.per_device_train_batch_size, "passes per step": a.num_iterations,
        "optimizer steps per step": a.steps_per_generation // a.gradient_accumulation_steps, "steps": a.max_steps,
        "max completion tokens": a.max_completion_length, "temperature": a.temperature, "top_p": a.top_p,
        "top_k": a.top_k, "min_p": a.min_p or 0.0, "lr": a.learning_rate,
        "schedule": f"{schedule} to 0", "warmup steps": a.warmup_steps, "weight decay": a.weight_decay,
        "betas": (a.adam_beta1, a.adam_beta2), "max grad norm": a.max_grad_norm, "kl beta": a.beta,
        "eps": (a.epsilon, a.epsilon_high if a.epsilon_high is not None else a.epsilon),
        "loss aggregation": aggregation, "reward scaling": a.scale_rewards,
        "fp32": not (a.bf16 or a.fp16), "gradient checkpointing": a.activation_checkpointing, "seed": a.seed,
    }


def check_same_settings(posttrain_cfg, trl_args) -> None:
    """Stop unless the two configurations agree on every setting the comparison holds equal."""
    ours, theirs = posttrain_settings(posttrain_cfg), trl_settings(trl_args)
    differ = [f"{k}: posttrain {ours[k]!r}, TRL {theirs[k]!r}" for k in ours if ours[k] != theirs[k]]
    if differ:
        raise SystemExit("the two sides would not run the same settings; " + "; ".join(differ))


def end_token_ids(tokenizer, eos_token_id) -> list[int]:
    """The model's eos ids plus the one token that spells STOP: posttrain's stop string as a TRL end token. Stops
    unless exactly one token of the vocabulary contains STOP, and it is STOP alone (then the two rules agree)."""
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    holding = [i for i in range(len(tokenizer)) if STOP in tokenizer.decode([i])]
    if len(holding) != 1 or tokenizer.decode(holding) != STOP:
        raise SystemExit(f"tokens holding {STOP!r}: {holding}; TRL cannot stop where posttrain's stop string does")
    return [*eos, *holding]


# -- one run per process -------------------------------------------------------------------------------------


def run_posttrain(cfg: BenchConfig, data: dict, out: Path) -> Result:
    """One `posttrain grpo` run; sampling and update seconds from its metrics.jsonl."""
    import torch

    from posttrain.recipes import grpo
    from posttrain.training.metrics import read_metrics

    after_imports = rss_mb()
    t0 = time.perf_counter()
    run_dir = grpo.train(posttrain_config(cfg, data["prompts"], data["init"], str(out), torch.get_num_threads()))
    end_to_end = time.perf_counter() - t0
    peak = peak_rss_mb()
    metrics = read_metrics(run_dir)
    steps = [m for m in metrics if "train/reward" in m]
    if len(steps) != cfg.steps:
        raise SystemExit(f"posttrain logged {len(steps)} steps, not {cfg.steps}; the count of completions is off")
    loop = posttrain_loop_seconds(metrics) - sum(m.get("perf/eval_seconds", 0.0) for m in metrics)
    accuracy = heldout_accuracy(str(run_dir / "final"), cfg.eval_prompts) if cfg.eval_prompts else None
    return Result("posttrain", cfg.steps * PROMPTS_PER_STEP * GROUP_SIZE, loop,
                  sum(m["perf/sample_seconds"] for m in steps), sum(m["perf/update_seconds"] for m in steps),
                  end_to_end, [m["train/reward"] for m in steps], [m["completions/mean_length"] for m in steps],
                  accuracy, after_imports, peak,
                  {"threads": torch.get_num_threads()})


def run_trl(cfg: BenchConfig, data: dict, out: Path) -> Result:
    """One TRL GRPOTrainer run; the bench's timers on `_generate` and `_generate_and_score_completions`."""
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    disable_progress_bars()
    after_imports = rss_mb()
    rows = [json.loads(line) for line in Path(data["trl_rows"]).read_text().splitlines()]
    seen: list[list[str]] = []  # the prompts of each reward call (one per generation batch)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(data["init"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(data["init"])
    model.generation_config.eos_token_id = end_token_ids(tokenizer, model.generation_config.eos_token_id)
    trainer = GRPOTrainer(model=model, reward_funcs=[trl_reward(seen)], args=trl_config(cfg, str(out)),
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    check_trl_setup(trainer, cfg, data)
    seconds, prompt_ids = watch_trl(trainer)
    with contextlib.redirect_stdout(io.StringIO()):  # its per-log-step dict printing
        output = trainer.train()
    loop = output.metrics["train_runtime"]
    final = out / "final"
    trainer.save_model(str(final))
    shutil.copy(Path(data["init"]) / "generation_config.json", final)  # the "." end token was for training only
    end_to_end = time.perf_counter() - t0
    peak = peak_rss_mb()
    check_trl_data(seen, prompt_ids, cfg, data)
    logged = [h for h in trainer.state.log_history if "reward" in h]
    if len(logged) != cfg.steps:
        raise SystemExit(f"TRL logged {len(logged)} steps, not {cfg.steps}")
    accuracy = heldout_accuracy(str(final), cfg.eval_prompts) if cfg.eval_prompts else None
    return Result("trl", sum(len(p) for p in seen), loop, seconds["_generate"],
                  loop - seconds["_generate_and_score_completions"], end_to_end, [h["reward"] for h in logged],
                  [h["completions/mean_length"] for h in logged], accuracy, after_imports, peak, {"threads": torch.get_num_threads(), "optim": str(trainer.args.optim)})


def trl_reward(seen: list[list[str]]):
    """posttrain's `numeric` reward in TRL's reward-function signature, scored by posttrain's `score_completions`."""
    from posttrain.data.records import Prompt
    from posttrain.rewards.functions import resolve_reward
    from posttrain.rewards.score import score_completions

    scorer = resolve_reward("numeric")

    def numeric(prompts, completions, answer, **kwargs) -> list[float]:
        records = [Prompt.from_dict({"prompt": p, "answer": a}) for p, a in zip(prompts, answer)]
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        seen.append([r.text for r in records])
        return score_completions(scorer, records, texts).total

    return numeric


def watch_trl(trainer) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Seconds spent in the trainer's sampling and rollout methods, and the prompt ids it tokenized, from now on.
    The methods are wrapped on the instance: what they do is unchanged."""
    seconds = {"_generate": 0.0, "_generate_and_score_completions": 0.0}
    prompt_ids: dict[str, list[int]] = {}

    def timed(name: str, inner):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - t0
        return call

    def recording(inner):
        def call(prompts):
            result = inner(prompts)
            prompt_ids.update((p[-1]["content"], list(ids)) for p, ids in zip(prompts, result[0]))
            return result
        return call

    for name in seconds:
        setattr(trainer, name, timed(name, getattr(trainer, name)))
    trainer._tokenize_prompts = recording(trainer._tokenize_prompts)
    return seconds, prompt_ids


def check_trl_setup(trainer, cfg: BenchConfig, data: dict) -> None:
    """Stop unless TRL will run posttrain's settings: the same config fields, and generation and model as asked."""
    import torch

    check_same_settings(posttrain_config(cfg, data["prompts"], data["init"], "unused", 0), trainer.args)
    g = trainer.generation_config
    asked = (True, 1.0, 1.0, 0, MAX_COMPLETION_TOKENS)
    if (g.do_sample, g.temperature, g.top_p, g.top_k, g.max_new_tokens) != asked or g.stop_strings:
        raise SystemExit(f"TRL would generate otherwise than asked: {g}")
    ends = sorted(trainer.model.generation_config.eos_token_id)  # the model's eos and STOP's token (end_token_ids)
    if sorted(trainer.eos_token_ids) != ends or sorted(g.eos_token_id) != ends:
        raise SystemExit(f"TRL would end completions at {trainer.eos_token_ids}, not at {ends} (eos and {STOP!r})")
    if trainer.model.dtype != torch.float32 or trainer.model.is_activation_checkpointing or trainer.ref_model is not None:
        raise SystemExit("TRL would train in another dtype, with gradient checkpointing or with a reference model")


def check_trl_data(seen: list[list[str]], prompt_ids: dict[str, list[int]], cfg: BenchConfig, data: dict) -> None:
    """Stop unless TRL sampled G completions of posttrain's prompts in every step, tokenized as posttrain does."""
    expected = json.loads(Path(data["expected"]).read_text())
    steps = [sorted(set(texts)) for texts in seen]
    if steps != expected["steps"] or any(len(texts) != PROMPTS_PER_STEP * GROUP_SIZE for texts in seen):
        raise SystemExit(f"TRL's {len(seen)} rollouts did not sample G completions of posttrain's prompts per step")
    wrong = [text for text, ids in prompt_ids.items() if ids != expected["ids"][text]]
    if wrong or len(prompt_ids) != cfg.steps * PROMPTS_PER_STEP:
        raise SystemExit(f"TRL tokenized {len(wrong)} prompts differently from posttrain, e.g. {wrong[:1]}")


def run_side(side: str, cfg: BenchConfig, data: dict, out: str) -> dict:
    """Entry point of a fresh process: one run, returned as a plain dict."""
    import peft  # noqa: F401  imported before timing on both sides (TRL imports it at import)
    import torch
    import transformers
    import transformers.models.llama.modeling_llama  # noqa: F401

    transformers.logging.set_verbosity_error()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = run_posttrain if side == "posttrain" else run_trl
    return asdict(run(cfg, data, Path(out)))


def in_fresh_process(fn, *args):
    """`fn(*args)` in a new interpreter: its peak RSS is its own and nothing is cached between runs."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# -- the comparison ----------------------------------------------------------------------------------------------


def compare(cfg: BenchConfig, folder: Path) -> tuple[dict[str, list[Result]], dict]:
    """Each side `repeats` times, alternating (A B A B ...), each run in a fresh process."""
    data = prepare(cfg, folder)
    if data["accuracy_before"] is not None:
        print(f"starting policy ({cfg.init}): held-out accuracy {data['accuracy_before']:.1%} "
              f"on {cfg.eval_prompts} prompts", flush=True)
    results: dict[str, list[Result]] = {side: [] for side in SIDES}
    for r in range(cfg.repeats):
        for side in SIDES:
            res = Result(**in_fresh_process(run_side, side, cfg, data, str(folder / f"{side}-{r}")))
            results[side].append(res)
            accuracy = "" if res.accuracy is None else f", held-out accuracy after {res.accuracy:.1%}"
            print(f"  [{r + 1}/{cfg.repeats}] {side}: {res.completions_per_second:.1f} completions/s "
                  f"({res.completions} / {res.loop_seconds:.2f} s loop: sampling {res.sample_seconds:.2f} s, update "
                  f"{res.update_seconds:.2f} s), reward step 1 {res.rewards[0]:.3f}, last {res.rewards[-1]:.3f}"
                  f"{accuracy}, peak RSS {res.peak_rss_mb:.0f} MB", flush=True)
    if len({res.completions for runs in results.values() for res in runs}) != 1:
        raise SystemExit("the runs sampled different numbers of completions")
    return results, data


def _median(runs: list[Result], key) -> float:
    return statistics.median(key(r) for r in runs)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def table_rows(results: dict[str, list[Result]], before: float | None) -> list[str]:
    """One markdown row per side: medians over its runs."""
    rate = {side: _median(runs, lambda r: r.completions_per_second) for side, runs in results.items()}
    rows = []
    for side, runs in results.items():
        ratio = "1.00x" if side == "posttrain" else f"**{rate['posttrain'] / rate[side]:.2f}x**"
        tail = max(1, len(runs[0].rewards) // 4)
        if before is None:
            accuracy = "—"
        else:
            after = _median(runs, lambda r: r.accuracy)
            accuracy = (f"{_pct(before)} → {_pct(after)} ({100 * (after - before):+.1f} pts; runs "
                        f"{', '.join(_pct(r.accuracy) for r in runs)})")
        cells = [
            LABELS[side], f"{rate[side]:.1f}", ", ".join(f"{r.completions_per_second:.1f}" for r in runs), ratio,
            f"{_median(runs, lambda r: r.loop_seconds):.2f}", f"{_median(runs, lambda r: r.sample_seconds):.2f}",
            f"{_median(runs, lambda r: r.update_seconds):.2f}", f"{_median(runs, lambda r: r.other_seconds):.2f}",
            f"{_median(runs, lambda r: statistics.mean(r.lengths)):.2f}",
            accuracy, f"{_median(runs, lambda r: r.rewards[0]):.3f}",
            f"{_median(runs, lambda r: statistics.mean(r.rewards[-tail:])):.3f}",
            f"{_median(runs, lambda r: r.end_to_end_seconds):.2f}", f"{_median(runs, lambda r: r.peak_rss_mb):.0f}",
            f"{_median(runs, lambda r: r.rss_after_imports_mb):.0f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def verdict(cfg: BenchConfig, results: dict[str, list[Result]], before: float | None) -> str:
    """The issue's target next to what this run measured (stated, not judged for the reader)."""
    rate = {side: _median(runs, lambda r: r.completions_per_second) for side, runs in results.items()}
    target = 3.0 if cfg.model == "tiny" else 1.5
    line = (f"Target (the issue): ≥ {target:g}x TRL's completions/s on `{cfg.model}`, with a held-out accuracy gain "
            f"no smaller than TRL's. Measured: {rate['posttrain'] / rate['trl']:.2f}x")
    if before is None:
        return line + "; accuracy not measured."
    gains = {side: _median(runs, lambda r: r.accuracy) - before for side, runs in results.items()}
    return (line + f"; gain {100 * gains['posttrain']:+.1f} pts (posttrain) vs {100 * gains['trl']:+.1f} pts (TRL) "
            f"on {cfg.eval_prompts} prompts (one run's accuracy moves by about "
            f"±{100 * 1.96 * (0.25 / max(cfg.eval_prompts, 1)) ** 0.5:.0f} pts at 95%).")


def results_markdown(cfg: BenchConfig, results: dict[str, list[Result]], data: dict, before: str, after: str) -> str:
    threads = results["posttrain"][0].extra["threads"]
    n = results["posttrain"][0].completions
    start = ("the raw random-init model" if cfg.init == "untrained" else
             "the demo's weak SFT checkpoint (15-30% of training problems right)")
    tail = max(1, cfg.steps // 4)
    return "\n".join([
        f"`{' '.join(['.venv/bin/python bench/grpo.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d %H:%M')}): "
        f"model `{cfg.model}` ({data['params'] / 1e6:.1f}M parameters), both sides starting from {start}; "
        f"{cfg.steps} steps of {PROMPTS_PER_STEP} prompts x G={GROUP_SIZE} = {n} completions sampled per run, "
        f"the same prompts at every step on both sides ({data['n_prompts']} arithmetic prompts, "
        f"`{TRAIN}`); reward `numeric` (posttrain's scorer on both sides); at most "
        f"{MAX_COMPLETION_TOKENS} completion tokens, stop at \"{STOP}\" (on TRL's side an end token: it takes no stop "
        f"strings), temperature 1, top_p 1, top_k 0; AdamW lr {LR:g} cosine to 0 without warm-up, grad clip 1, KL "
        f"beta 0, epsilon {EPSILON:g}, token-level loss (TRL `dapo`), advantages scaled by the group std; fp32, no "
        f"gradient checkpointing, no vLLM, {threads} torch thread(s) per run; {cfg.repeats} alternating runs per side, "
        "each in a fresh process; medians.",
        "",
        "completions/s = completions sampled / training-loop wall time: posttrain's `time/train_seconds` less its "
        "checkpoint writes and in-loop evaluation (none), TRL's `train_runtime` (evaluation off, nothing saved). "
        "Sampling: posttrain's `perf/sample_seconds`, TRL's time in `_generate`; update: posttrain's "
        "`perf/update_seconds`, TRL's loop time outside `_generate_and_score_completions` (so it includes the "
        "Trainer's own per-step work); other: the rest of the loop (scoring, advantages, batching, logging). "
        f"Held-out accuracy: greedy through posttrain's sampler on the first {cfg.eval_prompts} prompts of "
        f"`{HELDOUT}`, scored by `numeric`, on each run's saved final model; \"before\" is the shared start. Train "
        f"reward: the mean reward of the sampled completions at step 1 and over the last {tail} steps. End-to-end "
        "adds model loading, tokenization (posttrain: all the prompts, before its loop) and saving final/ (posttrain "
        "also writes report.html with its figures). Peak RSS = "
        "`ru_maxrss` of the run's own process before its held-out evaluation. The two sides draw different random "
        "samples (different RNGs), so their accuracies are two draws of the same procedure.",
        "",
        f"- machine before: {before}",
        f"- machine after: {after}",
        "- the machine is shared with other jobs: absolute numbers move with their load; the ratios were measured "
        "side by side, alternating.",
        "",
        "| trainer | completions/s (median) | runs (completions/s) | posttrain ÷ this | loop s | sampling s | update s | "
        "other s | completion tokens (mean) | held-out accuracy before → after | train reward step 1 | train reward, last steps | end-to-end s | "
        "peak RSS MB | RSS after imports MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        *table_rows(results, data["accuracy_before"]),
        "",
        verdict(cfg, results, data["accuracy_before"]),
    ])


def main(cfg: BenchConfig) -> None:
    if cfg.threads:  # the runs pin themselves; pinned here too so that machine_line reports the runs' setting
        import torch

        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-grpo-") as tmp:
        before = machine_line()
        print(before, flush=True)
        results, data = compare(cfg, Path(tmp))
        text = results_markdown(cfg, results, data, before, machine_line())
    print(text)
    if cfg.write:
        model = "" if cfg.model == "tiny" else f", {cfg.model}"
        init = "" if cfg.init == "sft" else ", untrained start"
        update_results("GRPO: posttrain vs TRL GRPOTrainer" + model + init + threads_note(cfg.threads), text)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(BenchConfig))
