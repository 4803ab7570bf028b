"""posttrain PPO against TRL's experimental PPOTrainer on the same policy, reward model, prompts and settings.

    python bench/ppo.py                      # writes the "PPO" section of bench/RESULTS.md
    python bench/ppo.py --trl-scoring template    # TRL trained on posttrain's reading of the reward model
    python bench/ppo.py --steps 2 --repeats 1 --no-write --threads 1     # a quick look, nothing written

What it measures: (a) episodes/s = completions sampled and trained on / wall time of the training loop (no model
loading, no saving): posttrain's `time/train_seconds` less `time/checkpoint_seconds` (no held-out evaluation runs);
TRL's `PPOTrainer.train()` call timed around it (it returns no runtime), nothing saved, no sample generations.
(b) Peak RSS of each run's own process (`ru_maxrss`) at the end of its training loop (before saving, posttrain's
report and the bench's scoring below). (c) The reward curve: the
mean reward-model score of each step's 64 completions. The two sides read their reward model differently (below),
so after each run, outside the timed loop, every completion of both sides is scored both ways by the same
reward model: through the chat template (posttrain's way: `RewardFunction` on the completion's text) and at the
last sampled token (TRL's way: the sampled prompt + completion ids, read at the eos). Each run checks that its
own logged scores are what its own way gives there (posttrain's `ppo/score`, TRL's `objective/scores`), so each
curve compares the two sides under one scorer.

TRL: trl >= 1.13 has no PPOTrainer; trl 1.12.0 is the last with `trl/experimental/ppo/ppo_trainer.py`. The bench
installs it once with `pip install --no-deps --target $POSTTRAIN_CACHE/bench/trl-1.12.0 trl==1.12.0` (whatever trl
the venv has is left alone) and puts that folder first on sys.path in the TRL run's own process, so transformers,
accelerate, datasets and torch are the venv's. It runs with transformers 5 as it is; what the bench does around
it (each a documented work-around, none changes TRL's algorithm):
- it reads batches from a DataLoader with `shuffle=True` that it builds itself; the bench replaces
  `trainer.dataloader` by one over the same tokenized rows, in posttrain's order, without shuffling;
- its loop never clips gradients (`max_grad_norm` is read nowhere in `ppo_trainer.py`): the bench adds a step
  pre-hook on its optimizer that clips the global norm over policy and value model at 1, as posttrain does;
- `gradient_checkpointing` is a deprecated alias in transformers 5: the bench sets `activation_checkpointing=False`.

Setup, the same on both sides (`posttrain_config` and `trl_config`; `check_same_settings` compares them field by
field before every TRL run, and tests/bench/test_ppo_settings.py checks that they agree):

- Models: the policy is the demo's SFT model (the built-in tiny Llama, 0.6M parameters, after the demo's SFT
  stage) and the reward model the demo's reward model (Bradley-Terry from the SFT weights on the demo's `concise`
  rater pairs): src/posttrain/demo.py's sft_stage, pairs_stage and rm_stage, run once and cached under
  $POSTTRAIN_CACHE/bench/. posttrain: `--ppo.reward-model` that folder, `--ppo.value-model reward` (its default);
  TRL: `reward_model` and `value_model` two loads of that folder as `AutoModelForSequenceClassification` (checked
  equal), `ref_model=None` (TRL copies the policy, as posttrain keeps a copy). fp32, no gradient checkpointing, no
  torch.compile, no LoRA, one process.
- Prompts: the train split of `builtin:arithmetic?ops=+&digits=2&pad=0.7` (7600 prompts), chat template. Each step
  the same 64 prompts on both sides, in the same order: posttrain's `rl.engine.PromptOrder` (the run's seed); TRL
  reads them from its replaced, unshuffled DataLoader, tokenized the way TRL's example script does
  (`apply_chat_template(..., add_generation_prompt=True)`, left padding); the bench checks that those are
  posttrain's prompt ids and, after the run, that every generation saw its step's prompts.
- Rollout: one completion per prompt, 64 per step (TRL `per_device_train_batch_size` 64, `gradient_accumulation_steps`
  1), at most 48 new tokens, temperature 1 (TRL adds 1e-7), top_k 0 and top_p 1 (TRL's train() fixes both), ending
  at the tokenizer's eos `<|im_end|>` (TRL `stop_token="eos"`; posttrain's sampler ends at the model's eos, the
  same id: checked); 64 completions sampled in one batch on both sides.
- Update: 4 passes over the step (TRL `num_ppo_epochs`, posttrain `rl.updates_per_batch`), each in 2 minibatches
  of 32 completions (`num_mini_batches`, `rl.minibatches`), one optimizer step each (8 per step) and 32 completions
  per forward/backward (posttrain `rl.micro_batch` 32). AdamW lr 5e-5 (the demo's PPO stage, `demo.PPO_LR`), betas 0.9/0.999,
  eps 1e-8, no weight decay, cosine to 0 without warm-up, gradient clipping at 1 over policy and value model.
  KL: fixed coefficient 0.3 (`demo.PPO_KL_COEF`) on the k1 estimator in the per-token reward; GAE γ 1, λ 0.95; clip range 0.2, value
  clip range 0.2, value loss weight 0.1 (one optimizer for both models); advantages whitened over the step; no
  reward whitening, no missing-eos penalty, no early stop.
- Runs: each in a fresh process, alternating A B A B, medians over `--repeats`. Repeat r seeds both sides with r
  (posttrain `run.seed`, TRL `seed`, the prompt order, and numpy and torch through transformers' `set_seed`, which
  PPOTrainer, not calling Trainer's constructor, would otherwise leave unseeded for its minibatch shuffles), so
  the repeats are independent draws and a rerun repeats them.

What is not the same, and cannot be made so by settings:
- Where the reward model reads its score. TRL cuts each response after the first stop token (eos) and reads the
  score at that token (the last one before padding); a response that hit 48 tokens is read at its last token.
  posttrain scores the completion's text as the reward model was trained: prompt and completion through the chat
  template, so the score is read after `<|im_end|>` at the template's closing "\\n" (and a cut-off completion gets
  its `<|im_end|>\\n` too). The same weights read one token apart give different numbers: this reward model
  was trained reading the newline (posttrain rm reads chat-template text at its last token), and on the
  SFT policy's samples it scores from about -11 (chatty answers) to +10 (a bare number) through the template but
  only 1.4 to 3.8 at the eos. So stock TRL optimises a weaker reward than posttrain from the same model; hence
  the two scorings of both sides, and `--trl-scoring template`, which trains TRL's side on posttrain's scorer
  (a documented departure, its own section) so that the curves compare the two PPO implementations alone.
- GAE bookkeeping. TRL adds the score one position past the last response token (a padding position, which its
  value loss also covers: `padding_mask_p1`); posttrain adds it at the last completion token and computes values
  and losses on completion tokens only. TRL re-shuffles the minibatches each pass (`np.random.permutation`);
  posttrain splits the step once. TRL steps its learning-rate schedule once per PPO step (8 optimizer steps
  at one lr); posttrain once per optimizer step (the same cosine over 8x as many points).
- The random draws: one seed on both sides but different RNGs (posttrain one stream per prompt, TRL `generate` on the
  global generator), so the completions differ and the curves are two draws of the same procedure.
- How each side computes: TRL takes the sampling policy's log-probs from the logits `generate` returns
  (`output_scores`), and runs the reference, value and reward forwards and the updates on padded rows with the LM
  head at every position; posttrain takes them from its sampler too (`--rl.old-logps auto` at fp32), packs
  several prompt groups into each row (rl/batch.py), and runs its LM head only from the first group's last prompt
  token on (`logits_to_keep`). Those are each side's defaults, part of what is timed.

Seconds, per side: sampling (posttrain `perf/sample_seconds`; TRL the time in `ppo_trainer.batch_generation`),
reward-model scoring (posttrain the time in `score_rollout`; TRL in `get_reward` calls on the reward model), and
"update", the rest of the loop (reference and value forwards, GAE, the 8 optimizer steps, logging), all timed by
wrapping module functions: what they do is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, peak_rss_mb, posttrain_loop_seconds, rss_mb, threads_note, update_results  # noqa: E402

from posttrain.demo import PPO_KL_COEF, PPO_LR  # noqa: E402

SIDES = ("posttrain", "trl")
TRL_VERSION = "1.12.0"  # the last trl with PPOTrainer (trl/experimental/ppo)
LABELS = {"posttrain": "posttrain ppo", "trl": f"TRL PPOTrainer (trl {TRL_VERSION})"}
TRAIN = "builtin:arithmetic?ops=+&digits=2&pad=0.7"
SEED = 0
PROMPTS_PER_STEP = 64
PASSES = 4  # TRL num_ppo_epochs
MINIBATCHES = 2
MICRO_BATCH = PROMPTS_PER_STEP // MINIBATCHES  # TRL forwards a whole minibatch (32 < per_device_train_batch_size 64)
MAX_COMPLETION_TOKENS = 48
LR = PPO_LR  # the demo's PPO stage's settings
KL_COEF = PPO_KL_COEF
GAMMA, LAM = 1.0, 0.95
CLIP, VALUE_CLIP, VF_COEF = 0.2, 0.2, 0.1
MAX_GRAD_NORM = 1.0


@dataclass
class BenchConfig:
    """posttrain PPO vs TRL PPOTrainer: episodes/s, peak memory and the reward curve at equal settings."""

    steps: int = 60
    """PPO steps per run (the demo's PPO stage); each samples 64 prompts x 1 completion and takes 8 optimizer
    steps."""
    repeats: int = 2
    """Runs per side, alternating; repeat r seeds both sides with r (independent draws); the table reports
    medians."""
    threads: int = 0
    """torch threads in each run (0 leaves torch's default, one per core). On a machine busy with other jobs use 1."""
    trl_scoring: Literal["eos", "template"] = "eos"
    """Where TRL's side reads the reward model: `eos`, TRL's own way (the sampled tokens, read at the eos), or
    `template`, a departure from stock TRL: its reward-model call is replaced by posttrain's scorer on the
    completions' text through the chat template, so that both sides optimise the same reward and the reward curves
    compare the two PPO implementations alone. Its own section of RESULTS.md."""
    write: bool = True
    """Write the results into bench/RESULTS.md."""


@dataclass
class Result:
    """One timed run, measured inside its own process."""

    side: str
    episodes: int
    loop_seconds: float
    sample_seconds: float
    score_seconds: float
    end_to_end_seconds: float  # model loading, set-up, training, saving (posttrain: also its report)
    scores: list[float]  # the side's own mean reward-model score of each step (as it logged it)
    by_template: list[list[float]]  # each completion's score read through the chat template (posttrain's way)
    at_eos: list[list[float]]  # ... read at the last sampled token, the eos (TRL's way)
    lengths: list[float]  # mean completion tokens of each step (the eos included)
    rss_after_imports_mb: float
    peak_rss_mb: float
    extra: dict = field(default_factory=dict)

    @property
    def episodes_per_second(self) -> float:
        return self.episodes / self.loop_seconds

    @property
    def update_seconds(self) -> float:
        return self.loop_seconds - self.sample_seconds - self.score_seconds

    def curve(self, scorer: str) -> list[float]:
        """Mean score of each step's completions by `scorer` (`by_template` or `at_eos`)."""
        return [statistics.mean(step) for step in getattr(self, scorer)]


# -- TRL 1.12, the models and the prompts -----------------------------------------------------------------------


def trl_folder() -> Path:
    """A folder holding trl 1.12.0 alone (`pip install --no-deps --target`), installed on first use."""
    from posttrain.models.load import cache_dir

    folder = cache_dir() / "bench" / f"trl-{TRL_VERSION}"
    if (folder / "trl" / "experimental" / "ppo" / "ppo_trainer.py").is_file():
        return folder
    print(f"installing trl {TRL_VERSION} (no dependencies) into {folder}", flush=True)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(partial),
                           f"trl=={TRL_VERSION}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"could not install trl {TRL_VERSION} into {partial}: {done.stderr.strip()[-500:]}")
    partial.rename(folder)
    return folder


def use_trl_112() -> None:
    """Put trl 1.12.0 first on sys.path; stop if another trl was imported already (it would be used instead)."""
    folder = trl_folder()
    if "trl" in sys.modules and not sys.modules["trl"].__file__.startswith(str(folder)):
        raise SystemExit(f"trl {sys.modules['trl'].__version__} is imported already; run TRL's side in a fresh process")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def starting_models(threads: int) -> Path:
    """The folder holding sft/final (the policy) and rm/final (the reward model and the value model's start): the
    demo's SFT, preference-pair and reward-model stages, run once and cached under $POSTTRAIN_CACHE/bench/."""
    from posttrain.models.load import cache_dir

    folder = cache_dir() / "bench" / f"ppo-models-demo-{_source_hash()}"
    if not (folder / "rm" / "final").is_dir():
        print(f"training the demo's SFT policy and reward model once, into {folder}", flush=True)
        t0 = time.perf_counter()
        in_fresh_process(train_models, str(folder), threads)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def _source_hash() -> str:
    """Of the demo stages that make the two models: a change to them trains new ones instead of reusing stale ones."""
    import inspect

    from posttrain import demo

    code = "".join(inspect.getsource(f) for f in (demo.sft_stage, demo.pairs_stage, demo.rm_stage))
    return hashlib.sha256(code.encode()).hexdigest()[:8]


def train_models(folder: str, threads: int) -> None:
    """The demo's SFT stage (the policy), its preference pairs (the SFT policy's samples judged by the `concise`
    rater) and its reward-model stage (Bradley-Terry from the SFT weights): src/posttrain/demo.py."""
    import torch

    from posttrain.demo import DemoConfig, pairs_stage, rm_stage, sft_stage

    if threads:
        torch.set_num_threads(threads)
    cfg = DemoConfig(output_dir=folder, progress=False, seed=SEED)
    sft, sft_model = sft_stage(cfg)
    print(f"  SFT: {sft.result}", flush=True)
    shutil.rmtree(Path(folder) / "sft" / "checkpoints", ignore_errors=True)  # only final/ is used
    pairs, pairs_file = pairs_stage(cfg, sft_model)
    print(f"  pairs: {pairs.result}", flush=True)
    rm = rm_stage(cfg, sft_model, pairs_file)
    print(f"  reward model: {rm.result}", flush=True)
    shutil.rmtree(Path(folder) / "rm" / "checkpoints", ignore_errors=True)


def prepare(cfg: BenchConfig, folder: Path) -> dict:
    """The two models, and the run's prompts in posttrain's order: their messages (for TRL to tokenize) and the
    token ids posttrain's PPO gives them (for the checks)."""
    from posttrain.models.load import load_tokenizer
    from posttrain.rl.engine import PromptOrder
    from posttrain.rl.setup import load_prompts

    models = starting_models(cfg.threads)
    policy, reward_model = models / "sft" / "final", models / "rm" / "final"
    prompts, ids = load_prompts(TRAIN, load_tokenizer(str(policy)), None, 512)  # as posttrain's PPO tokenizes
    files = []
    for seed in range(SEED, SEED + cfg.repeats):
        order = PromptOrder(len(prompts), PROMPTS_PER_STEP, seed)
        steps = [order.step(s) for s in range(cfg.steps)]
        files.append(folder / f"steps-seed{seed}.json")
        files[-1].write_text(json.dumps({
            "indices": steps, "ids": [[ids[i] for i in step] for step in steps],
            "messages": [[[{"role": m.role, "content": m.content} for m in prompts[i].prompt] for i in step]
                         for step in steps]}))
    return {"policy": str(policy), "reward_model": str(reward_model), "steps_by_seed": [str(f) for f in files],
            "n_prompts": len(prompts), "params": in_fresh_process(parameter_count, str(policy))}


def for_repeat(data: dict, r: int) -> dict:
    """What repeat r's runs read: its seed and its steps' prompts."""
    return {**data, "seed": SEED + r, "steps": data["steps_by_seed"][r]}


def parameter_count(model_dir: str) -> int:
    from posttrain.config import ModelConfig
    from posttrain.models.load import count_parameters, load_model

    return count_parameters(load_model(ModelConfig(name=model_dir))[0])[1]


def both_scorings(reward_model: str, steps_file: str, texts: list[list[str]], sequences: list[list[list[int]]],
                  own: list[list[float]], own_way: str) -> tuple[list[list[float]], list[list[float]]]:
    """Every completion of a run scored by the reward model both ways, per step: through the chat template
    (posttrain's RewardFunction on the completion's text), and at the last token of the sampled prompt + completion
    tokens (the eos, or the 48th token of one cut off: where TRL reads). Stops unless the side's own scores are
    the ones its own way gives here (`own_way`, `by_template` or `at_eos`), so that both curves come from scorers
    that reproduce the sides' own."""
    import torch

    from posttrain.data.collate import pad_batch
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.data.tokenize import Example
    from posttrain.rewards.model import RewardFunction

    prompts = load_records(TRAIN, accept=(Prompt,))
    indices = json.loads(Path(steps_file).read_text())["indices"]
    scorer = RewardFunction.load(reward_model)
    by_template = [scorer.score_batch([prompts[i] for i in step], step_texts)
                   for step, step_texts in zip(indices, texts)]
    at_eos = []
    with torch.inference_mode():
        for step in sequences:
            examples = [Example(ids, [False] * len(ids)) for ids in step]
            batch = pad_batch(examples, scorer.tokenizer.pad_token_id, "right")
            at_eos.append(scorer.model(batch["input_ids"], batch["attention_mask"]).tolist())
    mine = by_template if own_way == "by_template" else at_eos
    drift = max(abs(a - b) for step_a, step_b in zip(own, mine) for a, b in zip(step_a, step_b))
    if drift > 1e-3:
        raise SystemExit(f"the bench's {own_way} scorer differs from the side's own scores by {drift:.2g}")
    return by_template, at_eos


# -- the two configurations ------------------------------------------------------------------------------------


def posttrain_config(cfg: BenchConfig, data: dict, out: str, threads: int):
    """posttrain's PPO config for the bench (the module docstring's settings)."""
    from posttrain.config import ModelConfig, OptimConfig, RunConfig, SamplingParams
    from posttrain.recipes.ppo import PPOConfig, PPOSettings
    from posttrain.rl.setup import PromptDataConfig, RLConfig

    return PPOConfig(
        model=ModelConfig(name=data["policy"], dtype="float32", gradient_checkpointing=False),
        data=PromptDataConfig(train=TRAIN, eval_prompts=0),
        sampling=SamplingParams(max_new_tokens=MAX_COMPLETION_TOKENS, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0),
        optim=OptimConfig(lr=LR, weight_decay=0.0, betas=(0.9, 0.999), schedule="cosine", warmup_steps=0,
                          min_lr_ratio=0.0, max_grad_norm=MAX_GRAD_NORM, max_steps=cfg.steps),
        run=RunConfig(name="ppo", output_dir=out, device="cpu", seed=data["seed"], progress=False, log_every=1,
                      trackers=(), threads=threads),  # TRL's thread count: posttrain would pick fewer on a busy machine
        rl=RLConfig(group_size=1, prompts_per_step=PROMPTS_PER_STEP, micro_batch=MICRO_BATCH, updates_per_batch=PASSES,
                    minibatches=MINIBATCHES, eps_low=CLIP, eps_high=CLIP, loss_aggregation="token", kl_beta=0.0,
                    kl_estimator="k1"),
        ppo=PPOSettings(reward_model=data["reward_model"], value_model="reward", kl_coef=KL_COEF, kl_target=0.0,
                        gamma=GAMMA, lam=LAM, vf_coef=VF_COEF, value_clip=VALUE_CLIP, whiten_advantages=True,
                        eos_penalty=0.0, max_approx_kl=0.0),
    )


def trl_config(cfg: BenchConfig, out: str, seed: int, **changes):
    """TRL's PPOConfig at the same settings (TRL's defaults for everything not named); `changes` override fields
    (for the test that a changed setting is caught). Needs trl 1.12 importable (use_trl_112)."""
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(**{
        "output_dir": out, "use_cpu": True, "bf16": False, "fp16": False, "activation_checkpointing": False,
        "torch_compile": False, "report_to": "none", "save_strategy": "no", "eval_strategy": "no", "logging_steps": 1,
        "disable_tqdm": True, "seed": seed, "num_sample_generations": 0,
        "total_episodes": cfg.steps * PROMPTS_PER_STEP, "per_device_train_batch_size": PROMPTS_PER_STEP,
        "gradient_accumulation_steps": 1, "num_mini_batches": MINIBATCHES, "num_ppo_epochs": PASSES,
        "local_rollout_forward_batch_size": PROMPTS_PER_STEP,
        "response_length": MAX_COMPLETION_TOKENS, "temperature": 1.0, "stop_token": "eos", "missing_eos_penalty": None,
        "learning_rate": LR, "lr_scheduler_type": "cosine", "warmup_steps": 0, "weight_decay": 0.0,
        "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "max_grad_norm": MAX_GRAD_NORM,
        "kl_coef": KL_COEF, "kl_estimator": "k1", "gamma": GAMMA, "lam": LAM, "cliprange": CLIP,
        "cliprange_value": VALUE_CLIP, "vf_coef": VF_COEF, "whiten_rewards": False, **changes})


def posttrain_settings(c) -> dict:
    """The settings the comparison must hold equal, read from posttrain's PPOConfig."""
    return {
        "completions per prompt": c.rl.group_size, "completions per step": c.rl.prompts_per_step * c.rl.group_size,
        "passes per step": c.rl.updates_per_batch, "minibatches per pass": c.rl.minibatches,
        "completions per forward/backward": min(c.rl.micro_batch * c.rl.group_size,
                                                c.rl.prompts_per_step * c.rl.group_size // c.rl.minibatches),
        "steps": c.optim.max_steps, "max completion tokens": c.sampling.max_new_tokens,
        "temperature": c.sampling.temperature, "top_p": c.sampling.top_p, "top_k": c.sampling.top_k,
        "min_p": c.sampling.min_p, "stop strings": tuple(c.sampling.stop),
        "lr": c.optim.lr, "schedule": f"{c.optim.schedule} to {c.optim.min_lr_ratio:g}",
        "warmup steps": c.optim.warmup_steps, "weight decay": c.optim.weight_decay, "betas": tuple(c.optim.betas),
        "max grad norm": c.optim.max_grad_norm,
        "kl coef": c.ppo.kl_coef, "adaptive kl": c.ppo.kl_target > 0, "kl estimator": c.rl.kl_estimator,
        "kl in loss": c.rl.kl_beta, "gamma": c.ppo.gamma, "lam": c.ppo.lam, "clip": (c.rl.eps_low, c.rl.eps_high),
        "value clip": c.ppo.value_clip, "vf coef": c.ppo.vf_coef, "whiten advantages": c.ppo.whiten_advantages,
        "whiten rewards": False, "missing-eos penalty": c.ppo.eos_penalty, "early stop kl": c.ppo.max_approx_kl,
        "value model from": c.ppo.value_model, "fp32": c.model.dtype == "float32",
        "gradient checkpointing": c.model.gradient_checkpointing, "lora": c.model.lora_r > 0, "seed": c.run.seed,
    }


def trl_settings(a) -> dict:
    """The same settings read from TRL's PPOConfig (after its __post_init__). What TRL 1.12 fixes in its code, not
    its config, is written as a constant: top_p 1 and top_k 0 (PPOTrainer.train), no stop strings, whitened
    advantages, a fixed KL coefficient in the reward (never in the loss), no early stop, the value model the
    bench passes (the reward model), no LoRA (no peft_config)."""
    batch = a.per_device_train_batch_size * a.gradient_accumulation_steps
    schedule = getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type)
    return {
        "completions per prompt": 1, "completions per step": batch, "passes per step": a.num_ppo_epochs,
        "minibatches per pass": a.num_mini_batches,
        "completions per forward/backward": min(a.per_device_train_batch_size, batch // a.num_mini_batches),
        "steps": a.total_episodes // batch, "max completion tokens": a.response_length, "temperature": a.temperature,
        "top_p": 1.0, "top_k": 0, "min_p": 0.0, "stop strings": (),
        "lr": a.learning_rate, "schedule": f"{schedule} to 0", "warmup steps": a.warmup_steps,
        "weight decay": a.weight_decay, "betas": (a.adam_beta1, a.adam_beta2),
        "max grad norm": a.max_grad_norm,  # applied by the bench's hook (clip_gradients): TRL's loop never clips
        "kl coef": a.kl_coef, "adaptive kl": False, "kl estimator": a.kl_estimator, "kl in loss": 0.0,
        "gamma": a.gamma, "lam": a.lam, "clip": (a.cliprange, a.cliprange), "value clip": a.cliprange_value,
        "vf coef": a.vf_coef, "whiten advantages": True, "whiten rewards": a.whiten_rewards,
        "missing-eos penalty": a.missing_eos_penalty or 0.0, "early stop kl": 0.0, "value model from": "reward",
        "fp32": not (a.bf16 or a.fp16), "gradient checkpointing": a.activation_checkpointing, "lora": False,
        "seed": a.seed,
    }


def check_same_settings(posttrain_cfg, trl_args) -> None:
    """Stop unless the two configurations agree on every setting the comparison holds equal."""
    same_settings(posttrain_settings(posttrain_cfg), trl_settings(trl_args))


def same_settings(ours: dict, theirs: dict) -> None:
    differ = [f"{k}: posttrain {ours[k]!r}, TRL {theirs.get(k)!r}" for k in ours if ours[k] != theirs.get(k)]
    differ += [f"{k}: TRL only" for k in theirs if k not in ours]
    if differ:
        raise SystemExit("the two sides would not run the same settings; " + "; ".join(differ))


def settings_of_both(cfg: BenchConfig, out: str, *trl_changes: dict) -> tuple[dict, list[dict]]:
    """posttrain's settings, and TRL's as the bench sets them and with each of `trl_changes`, for the test. Call it
    in a fresh process: trl 1.12 must be imported before any other trl."""
    use_trl_112()
    data = {"policy": "tiny", "reward_model": "unused", "seed": SEED}
    return (posttrain_settings(posttrain_config(cfg, data, out, 1)),
            [trl_settings(trl_config(cfg, out, SEED, **changes)) for changes in ({}, *trl_changes)])


# -- one run per process -------------------------------------------------------------------------------------


def run_posttrain(cfg: BenchConfig, data: dict, out: Path) -> Result:
    """One `posttrain ppo` run; reward-model scoring timed by wrapping the recipe's `score_rollout`."""
    import torch

    from posttrain.recipes import ppo
    from posttrain.training.metrics import read_metrics

    after_imports = rss_mb()
    texts: list[list[str]] = []
    sequences: list[list[list[int]]] = []  # prompt + completion ids of each completion, per step
    own: list[list[float]] = []
    measured = {"score_seconds": 0.0}
    inner = ppo.score_rollout

    def score_rollout(reward, prompts, indices, rollout):
        t0 = time.perf_counter()
        scores = inner(reward, prompts, indices, rollout)
        measured["score_seconds"] += time.perf_counter() - t0
        texts.append(list(rollout.texts))
        sequences.append([p + c for p, c in zip(rollout.prompt_ids, rollout.completion_ids)])
        own.append(list(scores.total))
        return scores

    def finish_run(*args, **kwargs):  # called right after the loop, before the final save and the report
        measured["peak_rss_mb"] = peak_rss_mb()
        return finish(*args, **kwargs)

    finish = ppo.finish_run
    ppo.score_rollout, ppo.finish_run = score_rollout, finish_run
    t0 = time.perf_counter()
    run_dir = ppo.train(posttrain_config(cfg, data, str(out), torch.get_num_threads()))
    end_to_end = time.perf_counter() - t0
    peak_end_to_end = peak_rss_mb()
    metrics = read_metrics(run_dir)
    steps = [m for m in metrics if "ppo/score" in m]
    if len(steps) != cfg.steps or len(texts) != cfg.steps or any(len(t) != PROMPTS_PER_STEP for t in texts):
        raise SystemExit(f"posttrain logged {len(steps)} steps and scored {len(texts)}, not {cfg.steps} of "
                         f"{PROMPTS_PER_STEP}; the count of episodes is off")
    by_template, at_eos = both_scorings(data["reward_model"], data["steps"], texts, sequences, own, "by_template")
    return Result("posttrain", cfg.steps * PROMPTS_PER_STEP, posttrain_loop_seconds(metrics),
                  sum(m["perf/sample_seconds"] for m in steps), measured["score_seconds"], end_to_end,
                  [m["ppo/score"] for m in steps], by_template, at_eos, [m["completions/mean_length"] for m in steps],
                  after_imports, measured["peak_rss_mb"],
                  {"threads": torch.get_num_threads(), "peak_rss_end_to_end_mb": peak_end_to_end})


def run_trl(cfg: BenchConfig, data: dict, out: Path) -> Result:
    """One TRL PPOTrainer run (trl 1.12.0 first on sys.path), with the work-arounds of the module docstring."""
    use_trl_112()
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl.experimental.ppo import PPOTrainer

    disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated")  # TRL's wrapper asks
    after_imports = rss_mb()
    steps = json.loads(Path(data["steps"]).read_text())
    t0 = time.perf_counter()
    set_seed(data["seed"])  # what Trainer's constructor does, and PPOTrainer's does not
    policy = AutoModelForCausalLM.from_pretrained(data["policy"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(data["reward_model"], num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(data["reward_model"], num_labels=1, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(data["policy"], padding_side="left")  # TRL's generate wants left
    rows = [{"input_ids": tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False)}
            for step in steps["messages"] for messages in step]
    dataset = Dataset.from_list(rows)
    trainer = PPOTrainer(args=trl_config(cfg, str(out), data["seed"]), processing_class=tokenizer, model=policy,
                         ref_model=None, reward_model=reward, train_dataset=dataset, value_model=value)
    read_in_order(trainer, dataset)
    clip_gradients(trainer)
    check_trl_setup(trainer, cfg, data, rows, steps)
    seen = watch_trl(trainer, template_scorer(data, tokenizer) if cfg.trl_scoring == "template" else None)
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # PrinterCallback prints every step's dict
        trainer.train()
    loop = time.perf_counter() - t1
    peak = peak_rss_mb()
    trainer.save_model(str(out / "final"))
    end_to_end = time.perf_counter() - t0
    peak_end_to_end = peak_rss_mb()
    logged = [h for h in trainer.state.log_history if "objective/scores" in h]
    check_trl_data(seen, logged, cfg, steps, tokenizer)
    # a response ends at its first pad token, as TRL reads it (get_reward's sequence_lengths, the training masks'
    # sequence_length): the eos truncation pads what follows, and a pad the policy itself sampled mid-response
    # (rare: the tiny vocabulary's id 0) ends it there too
    responses = [[until_pad(ids.tolist(), tokenizer.pad_token_id) for ids in batch] for batch in seen["responses"]]
    texts = [tokenizer.batch_decode(step, skip_special_tokens=True) for step in responses]
    sequences = [[p + r for p, r in zip(prompts, step)] for prompts, step in zip(steps["ids"], responses)]
    own = [scores.tolist() for scores in seen["scores"]]
    own_way = "by_template" if cfg.trl_scoring == "template" else "at_eos"
    by_template, at_eos = both_scorings(data["reward_model"], data["steps"], texts, sequences, own, own_way)
    return Result("trl", cfg.steps * PROMPTS_PER_STEP, loop, seen["seconds"]["sample"], seen["seconds"]["score"],
                  end_to_end, [h["objective/scores"] for h in logged], by_template, at_eos,
                  [statistics.mean(len(r) for r in step) for step in responses], after_imports, peak,
                  {"threads": torch.get_num_threads(), "optim": str(trainer.args.optim),
                   "peak_rss_end_to_end_mb": peak_end_to_end})


def until_pad(ids: list[int], pad_id: int) -> list[int]:
    """The tokens before the first `pad_id` (all of them when there is none)."""
    return ids[: ids.index(pad_id)] if pad_id in ids else ids


def read_in_order(trainer, dataset) -> None:
    """Work-around: PPOTrainer builds a shuffling DataLoader itself; read the same rows, collated the same way,
    in order (they are in posttrain's prompt order)."""
    from torch.utils.data import DataLoader

    trainer.dataloader = DataLoader(dataset, batch_size=trainer.args.local_batch_size, shuffle=False,
                                    collate_fn=trainer.data_collator, drop_last=True)


def clip_gradients(trainer) -> None:
    """Work-around: TRL 1.12's PPO loop steps its optimizer without clipping; clip the global gradient norm of the
    policy and value model (the optimizer's parameters) before each step, as posttrain does."""
    import torch

    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside accelerate's wrapper
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = trainer.args.max_grad_norm

    def clip(*_) -> None:
        torch.nn.utils.clip_grad_norm_(params, norm)

    optimizer.register_step_pre_hook(clip)


def template_scorer(data: dict, tokenizer):
    """`--trl-scoring template`: `(step, responses) -> scores (B,)`, posttrain's RewardFunction on the decoded
    responses (TRL's padded response ids, cut after the eos) as answers to the step's prompts."""
    import torch

    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.rewards.model import RewardFunction

    prompts = load_records(TRAIN, accept=(Prompt,))
    indices = json.loads(Path(data["steps"]).read_text())["indices"]
    scorer = RewardFunction.load(data["reward_model"])

    def score(step: int, responses: torch.Tensor) -> torch.Tensor:
        texts = tokenizer.batch_decode([r[r != tokenizer.pad_token_id] for r in responses], skip_special_tokens=True)
        return torch.tensor(scorer.score_batch([prompts[i] for i in indices[step]], texts))

    return score


def watch_trl(trainer, score_text=None) -> dict:
    """Seconds in sampling (`batch_generation`) and reward-model scoring (`get_reward` on the reward model), the
    prompts each generation got, the generation settings and each scored response with its score. The module's
    functions are wrapped: what they do is unchanged, except that with `score_text` (template_scorer) it scores
    the reward model's calls instead."""
    from trl.experimental.ppo import ppo_trainer

    seen = {"seconds": {"sample": 0.0, "score": 0.0}, "queries": [], "generation": [], "responses": [], "scores": []}
    generate, get_reward = ppo_trainer.batch_generation, ppo_trainer.get_reward

    def batch_generation(model, queries, batch_size, pad_token_id, generation_config):
        t0 = time.perf_counter()
        try:
            return generate(model, queries, batch_size, pad_token_id, generation_config)
        finally:
            seen["seconds"]["sample"] += time.perf_counter() - t0
            seen["queries"].append(queries.clone())
            seen["generation"].append(generation_config)

    def scored(model, query_responses, pad_token_id, context_length):
        if model is not trainer.reward_model:  # the value model's forward: part of the update
            return get_reward(model, query_responses, pad_token_id, context_length)
        t0 = time.perf_counter()
        if score_text is None:
            out = get_reward(model, query_responses, pad_token_id, context_length)
        else:  # TRL reads only the scores (`_, score, _ = get_reward(...)`)
            out = (None, score_text(len(seen["responses"]), query_responses[:, context_length:]), None)
        seen["seconds"]["score"] += time.perf_counter() - t0
        seen["responses"].append(query_responses[:, context_length:].clone())
        seen["scores"].append(out[1].clone())
        return out

    ppo_trainer.batch_generation, ppo_trainer.get_reward = batch_generation, scored
    return seen


def check_trl_setup(trainer, cfg: BenchConfig, data: dict, rows: list[dict], steps: dict) -> None:
    """Stop unless TRL will run posttrain's settings on posttrain's prompt ids, ending where posttrain ends, with a
    value model equal to the reward model and a reference copy of the policy."""
    import torch

    check_same_settings(posttrain_config(cfg, data, "unused", 0), trainer.args)
    wrong = [i for i, (row, ids) in enumerate(zip(rows, (i for step in steps["ids"] for i in step)))
             if row["input_ids"] != ids]
    if wrong:
        raise SystemExit(f"TRL's prompt ids differ from posttrain's for {len(wrong)} prompts, e.g. row {wrong[0]}")
    tok = trainer.processing_class
    ends = trainer.policy_model.generation_config.eos_token_id
    posttrain_ends = json.loads((Path(data["policy"]) / "generation_config.json").read_text()).get("eos_token_id")
    if trainer.stop_token_id != tok.eos_token_id or ends != tok.eos_token_id or posttrain_ends not in (ends, [ends]):
        raise SystemExit(f"TRL would end completions at {trainer.stop_token_id}, posttrain at {posttrain_ends}")
    if tok.pad_token_id in (None, tok.eos_token_id) or tok.padding_side != "left":
        raise SystemExit("TRL needs a pad token other than eos (its masks compare ids with it) and left padding")
    rm, vm = trainer.reward_model.state_dict(), trainer.value_model.state_dict()
    if rm.keys() != vm.keys() or any(not torch.equal(rm[k], vm[k]) for k in rm):
        raise SystemExit("TRL's value model does not start from the reward model's weights")
    models = (trainer.policy_model, trainer.ref_model, trainer.value_model, trainer.reward_model)
    if any(m.dtype != torch.float32 for m in models) or trainer.policy_model.is_activation_checkpointing:
        raise SystemExit("TRL would run in another dtype or with gradient checkpointing")
    if trainer.ref_model is trainer.policy_model or trainer.is_peft_model:
        raise SystemExit("TRL would run without a separate reference copy of the policy")


def check_trl_data(seen: dict, logged: list[dict], cfg: BenchConfig, steps: dict, tokenizer) -> None:
    """Stop unless every TRL step generated from its step's prompts (posttrain's, in order) as configured, and the
    scores the bench recorded are the ones TRL logged."""
    if len(seen["queries"]) != cfg.steps or len(logged) != cfg.steps or len(seen["responses"]) != cfg.steps:
        raise SystemExit(f"TRL ran {len(seen['queries'])} generations and logged {len(logged)} steps, not {cfg.steps}")
    for s, queries in enumerate(seen["queries"]):
        got = [q[q != tokenizer.pad_token_id].tolist() for q in queries]
        if got != steps["ids"][s]:
            raise SystemExit(f"TRL's step {s + 1} generated from other prompts than posttrain's step {s + 1}")
    g = seen["generation"][0]
    asked = (True, 1.0, 0, MAX_COMPLETION_TOKENS)
    if (g.do_sample, g.top_p, g.top_k, g.max_new_tokens) != asked or abs(g.temperature - 1.0) > 1e-6:
        raise SystemExit(f"TRL generated otherwise than asked: {g}")
    for s, (scores, h) in enumerate(zip(seen["scores"], logged)):
        if abs(float(scores.mean()) - h["objective/scores"]) > 1e-5:
            raise SystemExit(f"TRL's step {s + 1}: recorded scores {float(scores.mean())} vs logged "
                             f"{h['objective/scores']}")


def run_side(side: str, cfg: BenchConfig, data: dict, out: str) -> dict:
    """Entry point of a fresh process: one run, returned as a plain dict."""
    import peft  # noqa: F401  imported before timing on both sides (TRL imports it at import)
    import torch
    import transformers
    import transformers.models.llama.modeling_llama  # noqa: F401  imported before timing on both sides

    transformers.logging.set_verbosity_error()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = run_posttrain if side == "posttrain" else run_trl
    return asdict(run(cfg, data, Path(out)))


def in_fresh_process(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` in a new interpreter: its peak RSS is its own and nothing is cached between runs."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


# -- the comparison ----------------------------------------------------------------------------------------------


def compare(cfg: BenchConfig, folder: Path) -> tuple[dict[str, list[Result]], dict]:
    """Each side `repeats` times, alternating (A B A B ...), each run in a fresh process."""
    data = prepare(cfg, folder)
    results: dict[str, list[Result]] = {side: [] for side in SIDES}
    for r in range(cfg.repeats):
        for side in SIDES:
            res = Result(**in_fresh_process(run_side, side, cfg, for_repeat(data, r), str(folder / f"{side}-{r}")))
            results[side].append(res)
            template, eos = res.curve("by_template"), res.curve("at_eos")
            print(f"  [{r + 1}/{cfg.repeats}] {side}: {res.episodes_per_second:.2f} episodes/s ({res.episodes} / "
                  f"{res.loop_seconds:.2f} s loop: sampling {res.sample_seconds:.2f} s, scoring "
                  f"{res.score_seconds:.2f} s, update {res.update_seconds:.2f} s); RM score step 1 -> last: "
                  f"{template[0]:.3f} -> {template[-1]:.3f} through the template, "
                  f"{eos[0]:.3f} -> {eos[-1]:.3f} at eos; "
                  f"peak RSS {res.peak_rss_mb:.0f} MB (end-to-end {res.extra['peak_rss_end_to_end_mb']:.0f} MB), "
                  f"end-to-end {res.end_to_end_seconds:.1f} s", flush=True)
    return results, data


def _median(runs: list[Result], key) -> float:
    return statistics.median(key(r) for r in runs)


def windows(steps: int) -> list[tuple[int, int]]:
    """About 12 step windows [start, end) covering the run, for the reward-curve table."""
    size = max(1, -(-steps // 12))
    return [(a, min(a + size, steps)) for a in range(0, steps, size)]


def table_rows(results: dict[str, list[Result]]) -> list[str]:
    """One markdown row per side: medians over its runs."""
    rate = {side: _median(runs, lambda r: r.episodes_per_second) for side, runs in results.items()}
    rows = []
    for side, runs in results.items():
        ratio = "1.00x" if side == "posttrain" else f"**{rate['posttrain'] / rate[side]:.2f}x**"
        cells = [
            LABELS[side], f"{rate[side]:.2f}", ", ".join(f"{r.episodes_per_second:.2f}" for r in runs), ratio,
            f"{_median(runs, lambda r: r.loop_seconds):.1f}", f"{_median(runs, lambda r: r.sample_seconds):.1f}",
            f"{_median(runs, lambda r: r.score_seconds):.1f}", f"{_median(runs, lambda r: r.update_seconds):.1f}",
            f"{_median(runs, lambda r: statistics.mean(r.lengths)):.1f}",
            f"{_median(runs, lambda r: r.end_to_end_seconds):.1f}", f"{_median(runs, lambda r: r.peak_rss_mb):.0f}",
            f"{_median(runs, lambda r: r.rss_after_imports_mb):.0f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def curve_rows(results: dict[str, list[Result]], steps: int) -> list[str]:
    """The reward curves, one row per step window: per side and scorer, the median over runs of the window's mean
    score, each run's in brackets."""
    def cell(runs: list[Result], scorer: str, a: int, b: int) -> str:
        values = [statistics.mean(r.curve(scorer)[a:b]) for r in runs]
        each = f" ({', '.join(f'{v:.3f}' for v in values)})" if len(values) > 1 else ""
        return f"{statistics.median(values):.3f}{each}"

    rows = []
    for a, b in windows(steps):
        cells = [f"{a + 1}" if b == a + 1 else f"{a + 1}-{b}"]
        cells += [cell(results[side], scorer, a, b) for scorer in ("by_template", "at_eos") for side in SIDES]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def tail_difference(results: dict[str, list[Result]], scorer: str, steps: int) -> tuple[float, float, float]:
    """Over the last quarter of the steps, every run's completions pooled per side: posttrain's mean score, TRL's,
    and 2 standard errors of their difference from sampling that many completions alone."""
    start = steps - max(1, steps // 4)
    stats = []
    for side in SIDES:
        scores = [s for r in results[side] for step in getattr(r, scorer)[start:] for s in step]
        stats.append((statistics.mean(scores), statistics.variance(scores) / len(scores) if len(scores) > 1 else 0.0))
    (mean_p, var_p), (mean_t, var_t) = stats
    return mean_p, mean_t, 2 * (var_p + var_t) ** 0.5


def verdict(cfg: BenchConfig, results: dict[str, list[Result]]) -> str:
    """The issue's target next to what this run measured (stated, not judged for the reader)."""
    rate = {side: _median(runs, lambda r: r.episodes_per_second) for side, runs in results.items()}
    peak = {side: _median(runs, lambda r: r.peak_rss_mb) for side, runs in results.items()}
    tails = []
    for scorer, name in (("by_template", "through the chat template"), ("at_eos", "at eos")):
        mean_p, mean_t, noise = tail_difference(results, scorer, cfg.steps)
        tails.append(f"{name} {mean_p:.3f} (posttrain) vs {mean_t:.3f} (TRL), {mean_p - mean_t:+.3f} ± {noise:.3f}")
    return (f"Target (the issue): ≥ 2x TRL's episodes/s, the same reward curve within noise, no more memory. "
            f"Measured: {rate['posttrain'] / rate['trl']:.2f}x episodes/s; peak RSS {peak['posttrain']:.0f} MB "
            f"(posttrain) vs {peak['trl']:.0f} MB (TRL); mean RM score over the last {max(1, cfg.steps // 4)} steps, "
            f"{'; '.join(tails)} (± two standard errors from sampling that many completions alone; each run is also "
            "one trajectory of its seed: the bracketed runs show how far they spread).")


def results_markdown(cfg: BenchConfig, results: dict[str, list[Result]], data: dict, before: str, after: str) -> str:
    threads = results["posttrain"][0].extra["threads"]
    n = results["posttrain"][0].episodes
    trl_reads = ("TRL's side is trained on its own reading of the reward model, at the eos token."
                 if cfg.trl_scoring == "eos" else
                 "TRL's side is trained on posttrain's reading of the reward model (`--trl-scoring template`: the "
                 "bench replaces its reward-model call by posttrain's scorer on the completions' text), so both sides "
                 "optimise the same reward.")
    return "\n".join([
        f"`{' '.join(['.venv/bin/python bench/ppo.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d %H:%M')}): "
        f"policy: the demo's SFT model (tiny Llama, {data['params'] / 1e6:.1f}M parameters), reward model: the "
        "demo's, value model initialised from it on both sides; "
        f"{cfg.steps} steps of {PROMPTS_PER_STEP} prompts x 1 completion = {n} episodes per run, the same prompts at "
        f"every step on both sides ({data['n_prompts']} arithmetic prompts, `{TRAIN}`, chat template); at most "
        f"{MAX_COMPLETION_TOKENS} completion tokens, temperature 1, top_p 1, top_k 0, end at eos; {PASSES} passes x "
        f"{MINIBATCHES} minibatches of {MICRO_BATCH} per step; AdamW lr {LR:g} cosine to 0 without warm-up, grad clip "
        f"{MAX_GRAD_NORM:g} (on TRL's side by the bench's hook: TRL 1.12 does not clip), fixed KL coefficient "
        f"{KL_COEF:g} (k1) in the reward, γ {GAMMA:g}, λ {LAM:g}, clip {CLIP:g}, value clip {VALUE_CLIP:g}, value "
        f"weight {VF_COEF:g}, whitened advantages; fp32, no gradient checkpointing, {threads} torch thread(s) per "
        f"run; {cfg.repeats} alternating runs per side, each in a fresh process, repeat r seeded r on both sides; "
        f"medians. {trl_reads}",
        "",
        "episodes/s = completions sampled and trained on / training-loop wall time (posttrain: `time/train_seconds` "
        "less its checkpoint write; TRL: its `train()` call, nothing saved). Sampling, reward-model scoring and "
        "update (the rest of the loop: reference and value forwards, GAE, 8 optimizer steps, logging) are timed the "
        "same way on both sides (bench/ppo.py's docstring). End-to-end adds model loading, set-up and saving the "
        "policy (posttrain also writes its run report). Peak RSS = `ru_maxrss` of the run's own process at the end of "
        "its training loop. Completion tokens include the eos token.",
        "",
        f"- machine before: {before}",
        f"- machine after: {after}",
        "- the machine is shared with other jobs: absolute numbers move with their load; the ratios were measured "
        "side by side, alternating.",
        "",
        "| trainer | episodes/s (median) | runs (episodes/s) | posttrain ÷ this | loop s | sampling s | RM scoring s | "
        "update s | completion tokens (mean) | end-to-end s | peak RSS MB | RSS after imports MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table_rows(results),
        "",
        "Reward curves: the mean reward-model score of each step's completions, averaged over the steps of each row "
        "(median over runs; each run's in brackets), with every completion of both sides scored afterwards two "
        "ways. *Through the chat template*: posttrain's way and the reward model's training format (prompt and "
        "completion text through the template, read at its last token, the newline after `<|im_end|>`); "
        "posttrain's own `ppo/score`. *At eos*: TRL's way (the sampled tokens, read at the last one: the eos "
        "`<|im_end|>`, or the last token of a completion cut off), TRL's own `objective/scores` unless "
        "`--trl-scoring template`. Each run checks that its own scores are what its way gives here. The two "
        "sides sample different completions (different RNGs).",
        "",
        "| steps | posttrain, template | TRL, template | posttrain, at eos | TRL, at eos |",
        "|---|---:|---:|---:|---:|",
        *curve_rows(results, cfg.steps),
        "",
        verdict(cfg, results),
    ])


def main(cfg: BenchConfig) -> None:
    import torch

    if cfg.threads:  # the runs pin themselves; pinned here too so that machine_line reports the runs' setting
        torch.set_num_threads(cfg.threads)
    use_trl_112()  # so that machine_line reports the trl that runs
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-ppo-") as tmp:
        before = machine_line()
        print(before, flush=True)
        results, data = compare(cfg, Path(tmp))
        text = results_markdown(cfg, results, data, before, machine_line())
    print(text)
    if cfg.write:
        scoring = ", TRL scoring through the chat template" if cfg.trl_scoring == "template" else ""
        update_results("PPO: posttrain vs TRL PPOTrainer" + scoring + threads_note(cfg.threads), text)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(BenchConfig))
