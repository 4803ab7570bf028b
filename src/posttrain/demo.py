"""`posttrain demo`: the post-training loop on the built-in tiny model and arithmetic task.

Each stage is a real command's function called with the embedded defaults, so what the demo
shows is what a user gets from the same commands:

1. SFT: the tiny random-init Llama learns 2-digit addition from demonstrations
   (`posttrain sft`). Like many real demonstrations, 70% of them are chatty ("Good question! The
   answer is 68. I hope this helps!"), the rest give the bare number. Held-out exact-match
   accuracy is measured with the sampler (`posttrain eval`).
2. Preferences: the SFT policy samples 4 answers per training prompt and a simulated rater that
   prefers correct, concise answers judges them (`posttrain data pairs`): best vs worst.
3. Reward model: a Bradley-Terry model from the SFT weights learns those preferences
   (`posttrain rm`); its held-out pairwise accuracy is printed.
4. DPO: the SFT policy is tuned on the same pairs (`posttrain dpo`).
5. Win rate: DPO policy vs SFT policy on held-out prompts, greedy, judged by the same rater,
   with a 95% interval.
6. RL with a verifiable reward: an SFT checkpoint from early in stage 1, picked because it still gets only
   15-30% of the problems right, is trained with GRPO (`posttrain grpo`) on the exact-answer reward; its
   held-out accuracy before and after is printed.
7. The feedback loop: a pairwise campaign of the model versions' sampled answers to held-out prompts (SFT,
   DPO, GRPO and PPO, two at a time, every pair alike) is served by the feedback app; simulated raters (the
   same rater's preference plus `feedback_noise` random answers) judge it through the HTTP API; the
   campaign's leaderboard and agreement are printed (`posttrain feedback stats`); its judgments are exported
   (`posttrain feedback export`) and a reward model trains on them (`posttrain rm`), with its held-out
   accuracy on judgments it did not see.

Every stage writes a normal run directory under `output_dir`; the summary table at the end
says where.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig, check

TASK = "builtin:arithmetic?ops=+&digits=2&pad=0.7"
HELDOUT = "builtin:arithmetic/heldout?ops=+&digits=2&pad=0.7"
RATER = "concise"
# The pair, RM and DPO stages read what the SFT policy sampled: a prompt (~20 tokens) and up to SAMPLED_TOKENS
# tokens, which a 64-token limit did not always hold (a shortened SFT run rambles to the limit). 128 holds them;
# a pair that still did not fit would be skipped and counted, not stop the demo.
SAMPLED_TOKENS = 48
# The PPO stage (docs/algorithms/ppo.md, "Expected results"). The demo's reward model learned "a bare number is
# good" far better than "the right number is good" (92% of its rejected answers were correct but chatty), so a
# loose leash games it: at lr 1e-4 and β 0.05 the held-out gold score fell from 8.8 to 3.8 in 15 steps while the
# reward-model score rose 1.6 -> 8.1 (wrong bare numbers). β 0.3 makes changing the digits costly and stopping
# after the number cheap: measured 1.6 -> 7.9 with the gold score 8.8 -> 9.3, KL 1.2 nats, in 40 steps.
PPO_LR = 5e-5
PPO_KL_COEF = 0.3
PPO_KL_BUDGET = 3.0  # nats per answer: the held-out KL to the SFT policy the stage promises to stay under
PAIR_MAX_LENGTH = 128
CAMPAIGN = "demo-versions"  # the feedback stage's campaign: the demo's policies judged two at a time
# SFT keeps a checkpoint this often, so the GRPO stage can start from one that is still weak at the task.
SFT_SAVE_EVERY = 25
WEAK_SEARCH_FROM = 300  # the first SFT checkpoint looked at (earlier ones sit on the plateau, ~2%)
WEAK_PROMPTS = 100  # training prompts each candidate checkpoint is scored on


@dataclass
class DemoConfig:
    """The whole loop on the built-in tiny model and arithmetic task, in minutes on a laptop CPU."""

    output_dir: str = "runs/demo"
    """Where the stages' run directories go. A new demo replaces the previous demo's runs there."""
    sft_steps: int = 1500
    """SFT optimizer steps (batch 64). The tiny model sits on a plateau (same answer for every question)
    for several hundred steps before it learns to add; 1500 steps reached 100% on every seed tried."""
    eval_prompts: int = 500
    """Held-out prompts for the accuracy and win-rate measurements."""
    pair_prompts: int = 1000
    """Training prompts the SFT policy answers 4 times each to make preference pairs."""
    rm_steps: int = 150
    """Reward-model optimizer steps (batch 16 pairs)."""
    dpo_steps: int = 150
    """DPO optimizer steps (batch 16 pairs)."""
    feedback_prompts: int = 480
    """Held-out prompts in the feedback campaign: each compares two of the SFT, DPO, GRPO and PPO policies' answers
    (sampled at temperature 1), the 6 pairs in turn; a prompt whose two answers are identical is left out (DPO and
    PPO mostly both give the bare number). At 120 prompts (84 items) the reward model trained on the judgments
    reached 82% held-out accuracy; at 480, 84-91% over seeds 0-2."""
    feedback_raters: int = 3
    """Simulated raters judging the campaign through the HTTP API; each judges every item (overlap)."""
    feedback_noise: float = 0.1
    """Chance that a simulated rater answers at random instead of by the rater's preference."""
    feedback_rm_steps: int = 150
    """Optimizer steps of the reward model trained on the campaign's judgments (batch 16 pairs)."""
    grpo_steps: int = 300
    """GRPO steps (32 prompts x 8 samples each) from the weak SFT checkpoint."""
    ppo_steps: int = 40
    """PPO steps (64 prompts, one sample each; 4 passes of 2 minibatches) from the SFT policy against the reward
    model."""
    weak_band: tuple[float, float] = (0.15, 0.30)
    """The accuracy band (on training prompts) the GRPO stage's starting SFT checkpoint is picked from: the
    checkpoint closest to the band's middle among those SFT saved before its accuracy first rose above it."""
    stages: Literal["all", "sft", "rl"] = "all"
    """`sft` runs only the SFT and accuracy stages; `rl` the SFT and GRPO stages; `all` every stage."""
    seed: int = 0
    """Seed of every stage."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        check(0.0 <= self.feedback_noise <= 1.0, "feedback_noise", "must be in [0, 1]", self.feedback_noise)
        check(self.feedback_raters >= 1, "feedback_raters", "must be >= 1", self.feedback_raters)
        check(self.feedback_prompts >= 1, "feedback_prompts", "must be >= 1", self.feedback_prompts)
        check(0 <= self.weak_band[0] < self.weak_band[1] <= 1, "weak_band", "must be (low, high) with "
              "0 <= low < high <= 1", self.weak_band)


@dataclass
class StageResult:
    stage: str
    result: str
    seconds: float
    run_dir: Path | None
    value: float = float("nan")  # the stage's headline number (accuracy, win rate, ...) for tests and reports
    detail: Any = None  # what the report's evaluation is written from: an AccuracyResult, a win-rate dict


@dataclass
class RLOutcome:
    """The GRPO stage's held-out accuracy at its start, at its end, and at each evaluation (step, accuracy)."""

    before: float
    after: float
    curve: list[tuple[int, float]]


@dataclass
class PPOOutcome:
    """The PPO stage's held-out evaluations (eval/proxy_score, eval/gold_score, eval/kl): the first, the last, all."""

    before: dict[str, float]
    after: dict[str, float]
    evals: list[dict[str, float]]


def last_logged(run_dir: Path, key: str) -> float:
    """The run's last logged value of `key`; NaN when none was (a shortened demo may hold out no pair)."""
    from posttrain.training.metrics import read_metrics

    return next((m[key] for m in reversed(read_metrics(run_dir)) if key in m), float("nan"))


def sft_stage(cfg: DemoConfig) -> tuple[StageResult, Path]:
    from posttrain.recipes.sft import SFTConfig, SFTDataConfig, train

    t0 = time.perf_counter()
    sft_cfg = SFTConfig(
        model=ModelConfig(name="tiny"),
        # length-bucketed steps, as when the figures in README.md and docs/ were measured; with random steps (the SFT
        # default) seeds 0 and 1 also reached 100% held-out exact match, at held-out loss 0.083
        data=SFTDataConfig(train=TASK, max_length=64, bucket_by_length=True),
        # lr 3e-3 left some seeds on the plateau for 1500 steps; 1e-3 with beta2 0.95 escaped on every seed tried
        optim=OptimConfig(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01, warmup_steps=50, min_lr_ratio=0.1,
                          batch_size=64, max_steps=cfg.sft_steps),
        run=RunConfig(name="sft", output_dir=cfg.output_dir, seed=cfg.seed, overwrite=True, log_every=50,
                      eval_every=0, progress=cfg.progress, save_every=SFT_SAVE_EVERY,
                      keep_checkpoints=cfg.sft_steps // SFT_SAVE_EVERY + 1),
    )
    run_dir = train(sft_cfg)

    eval_loss = last_logged(run_dir, "eval/loss")
    return StageResult("SFT (tiny Llama, 2-digit addition)", f"held-out loss {eval_loss:.3f}",
                       time.perf_counter() - t0, run_dir, eval_loss), run_dir / "final"


def accuracy_stage(cfg: DemoConfig, model_dir: Path, label: str) -> StageResult:
    from posttrain.eval.run import EvalConfig, run_eval
    from posttrain.files import write_jsonl

    t0 = time.perf_counter()
    from posttrain.config import SamplingParams

    eval_cfg = EvalConfig(model=ModelConfig(name=str(model_dir)), task=HELDOUT, limit=cfg.eval_prompts,
                          sampling=SamplingParams(temperature=0.0, max_new_tokens=48))
    result = run_eval(eval_cfg)
    write_jsonl(result.samples, model_dir.parent / "samples.jsonl")
    text = f"{result.accuracy:.1%} exact match (95% CI {result.ci_low:.1%}-{result.ci_high:.1%}, n={result.n})"
    return StageResult(label, text, time.perf_counter() - t0, model_dir.parent, result.accuracy, result)


def checkpoint_model(run_dir: Path, step: int, out: Path) -> Path:
    """A loadable model directory (out/) of SFT checkpoint `step`: final/'s config and tokenizer with the
    checkpoint's weights."""
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    weights = load_file(str(run_dir / "checkpoints" / f"step-{step}" / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(run_dir / "final", out)
    model.save_pretrained(out)
    return out


def weak_sft_stage(cfg: DemoConfig, sft_run: Path) -> tuple[StageResult, Path]:
    """An SFT checkpoint that still gets only `weak_band` of the training problems right (greedy): the
    checkpoints from WEAK_SEARCH_FROM on are scored in order until one scores above the band; of those in the
    band the one closest to its middle is kept (the closest overall when none falls in it)."""
    from posttrain.config import SamplingParams
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.eval.accuracy import evaluate_accuracy
    from posttrain.models.load import load_model
    from posttrain.rewards.functions import resolve_reward
    from posttrain.training.checkpoint import checkpoint_steps

    t0 = time.perf_counter()
    low, high = cfg.weak_band
    prompts = load_records(TASK, accept=(Prompt,), limit=WEAK_PROMPTS)
    params = SamplingParams(temperature=0.0, max_new_tokens=24, stop=(".",))
    scored: dict[int, float] = {}
    folder = Path(cfg.output_dir) / "sft-weak"
    saved = checkpoint_steps(sft_run / "checkpoints")
    for step in [s for s in saved if s >= WEAK_SEARCH_FROM] or saved[-1:]:  # a shortened SFT: its last step
        model_dir = checkpoint_model(sft_run, step, folder / "candidate")
        model, tokenizer = load_model(ModelConfig(name=str(model_dir)))
        scored[step] = evaluate_accuracy(model, tokenizer, prompts, resolve_reward("numeric"), params).accuracy
        if scored[step] > high:
            break
    middle = (low + high) / 2
    in_band = [s for s, a in scored.items() if low <= a <= high] or list(scored)
    step = min(in_band, key=lambda s: (abs(scored[s] - middle), s))
    model_dir = checkpoint_model(sft_run, step, folder / "final")
    import shutil

    shutil.rmtree(folder / "candidate", ignore_errors=True)
    tried = ", ".join(f"{s}: {a:.0%}" for s, a in scored.items())
    return StageResult("Weak SFT checkpoint for RL", f"step {step} ({scored[step]:.0%} of {WEAK_PROMPTS} training "
                       f"problems; tried {tried})", time.perf_counter() - t0, None, scored[step]), model_dir


def grpo_stage(cfg: DemoConfig, start: Path) -> tuple[StageResult, Path]:
    from posttrain.config import SamplingParams
    from posttrain.recipes.grpo import GRPOConfig, train
    from posttrain.rl.setup import PromptDataConfig, RLConfig
    from posttrain.training.metrics import read_metrics

    t0 = time.perf_counter()
    run_dir = train(GRPOConfig(
        model=ModelConfig(name=str(start)),
        data=PromptDataConfig(train=TASK, eval=HELDOUT, eval_prompts=min(cfg.eval_prompts, 200)),
        sampling=SamplingParams(max_new_tokens=24, temperature=1.0, stop=(".",)),
        # lr 3e-4 with cosine decay: from a 21.5% checkpoint, 300 steps reached 68.5% held-out; 1e-4 reached 45%,
        # and 3e-4 held constant swung between 48% and 63% over the last 100 steps
        optim=OptimConfig(lr=3e-4, warmup_steps=10, max_steps=cfg.grpo_steps),
        run=RunConfig(name="grpo", output_dir=cfg.output_dir, seed=cfg.seed, overwrite=True, log_every=10,
                      eval_every=50, progress=cfg.progress),
        rl=RLConfig(reward="numeric", group_size=8, prompts_per_step=32),
    ))
    evals = [(m["step"], m["eval/accuracy"]) for m in read_metrics(run_dir) if "eval/accuracy" in m]
    (_, before), (_, after) = evals[0], evals[-1]
    curve = ", ".join(f"{a:.0%}" for _, a in evals)
    text = f"held-out accuracy {before:.1%} -> {after:.1%} in {cfg.grpo_steps} steps (every 50 steps: {curve})"
    result = StageResult("GRPO from the weak SFT checkpoint (exact-answer reward)", text, time.perf_counter() - t0,
                         run_dir, after, RLOutcome(before, after, evals))
    return result, run_dir / "final"


def pairs_stage(cfg: DemoConfig, sft_model: Path) -> tuple[StageResult, Path]:
    from posttrain.config import SamplingParams
    from posttrain.pairs import PairsConfig, make_pairs

    t0 = time.perf_counter()
    out = Path(cfg.output_dir) / "pairs" / "pairs.jsonl"
    stats = make_pairs(PairsConfig(
        output=str(out), model=ModelConfig(name=str(sft_model)), prompts=TASK, k=4, rater=RATER, noise=0.0,
        limit=cfg.pair_prompts, seed=cfg.seed, overwrite=True, progress=cfg.progress,
        sampling=SamplingParams(temperature=1.0, max_new_tokens=SAMPLED_TOKENS),
    ))
    text = (f"{stats.written} pairs from {stats.prompts} prompts (rater '{RATER}'; {stats.ties + stats.identical} "
            f"dropped: {stats.identical} identical, {stats.ties} tied)")
    return StageResult("Preferences: 4 samples/prompt, simulated rater", text, time.perf_counter() - t0, out.parent,
                       stats.written), out


def rm_stage(cfg: DemoConfig, sft_model: Path, pairs: Path) -> StageResult:
    from posttrain.recipes.reward_model import RewardModelConfig, train

    t0 = time.perf_counter()
    run_dir = train(RewardModelConfig(
        model=ModelConfig(name=str(sft_model)),
        data=DataConfig(train=str(pairs), max_length=PAIR_MAX_LENGTH, truncation="skip"),
        optim=OptimConfig(lr=3e-4, warmup_steps=10, batch_size=16, max_steps=cfg.rm_steps),
        run=RunConfig(name="rm", output_dir=cfg.output_dir, seed=cfg.seed, overwrite=True, log_every=25,
                      progress=cfg.progress),
    ))
    acc = last_logged(run_dir, "eval/accuracy")
    return StageResult("Reward model (Bradley-Terry)", f"held-out pair accuracy {acc:.1%}", time.perf_counter() - t0,
                       run_dir, acc)


def dpo_stage(cfg: DemoConfig, sft_model: Path, pairs: Path) -> tuple[StageResult, Path]:
    from posttrain.recipes.dpo import DPOConfig, PreferenceConfig, PreferenceDataConfig, train

    t0 = time.perf_counter()
    run_dir = train(DPOConfig(
        model=ModelConfig(name=str(sft_model)),
        data=PreferenceDataConfig(train=str(pairs), max_length=PAIR_MAX_LENGTH, truncation="skip"),
        optim=OptimConfig(lr=3e-4, warmup_steps=10, batch_size=16, max_steps=cfg.dpo_steps),
        run=RunConfig(name="dpo", output_dir=cfg.output_dir, seed=cfg.seed, overwrite=True, log_every=25,
                      progress=cfg.progress),
        # the NLL term on chosen answers (RPO) keeps their likelihood from sinking while margins grow
        dpo=PreferenceConfig(beta=0.1, nll_coef=1.0),
    ))
    acc = last_logged(run_dir, "eval/rewards/accuracies")
    return StageResult("DPO from the SFT policy", f"held-out implicit-reward accuracy {acc:.1%}",
                       time.perf_counter() - t0, run_dir, acc), run_dir / "final"


def winrate_stage(cfg: DemoConfig, policy: Path, baseline: Path, name: str = "DPO") -> StageResult:
    from posttrain.config import SamplingParams
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.eval.winrate import sample_and_compare
    from posttrain.models.load import load_model
    from posttrain.tasks.arithmetic_raters import make_rater

    t0 = time.perf_counter()
    prompts = load_records(HELDOUT, accept=(Prompt,), limit=cfg.eval_prompts)
    model_a, tokenizer = load_model(ModelConfig(name=str(policy)))
    model_b, _ = load_model(ModelConfig(name=str(baseline)))
    r = sample_and_compare(model_a, model_b, tokenizer, prompts, make_rater(RATER),
                           SamplingParams(temperature=0.0, max_new_tokens=48))
    text = (f"{name} wins {r['win_rate']:.1%} (95% CI {r['ci_low']:.1%}-{r['ci_high']:.1%}; "
            f"{r['wins']} wins, {r['ties']} ties, {r['losses']} losses)")
    return StageResult(f"Win rate: {name} vs SFT, same rater", text, time.perf_counter() - t0, None, r["win_rate"],
                       {**r, "a": name.lower()})


def ppo_stage(cfg: DemoConfig, sft_model: Path, reward_model: Path) -> tuple[StageResult, Path]:
    """PPO from the SFT policy against the demo's reward model, with the rater that made its pairs as the gold
    judge: the held-out reward-model score, gold score and KL at the start and the end."""
    from posttrain.config import SamplingParams
    from posttrain.recipes.ppo import PPOConfig, PPOSettings, train
    from posttrain.rl.setup import PromptDataConfig, RLConfig
    from posttrain.training.metrics import read_metrics

    t0 = time.perf_counter()
    run_dir = train(PPOConfig(
        model=ModelConfig(name=str(sft_model)),
        data=PromptDataConfig(train=TASK, eval=HELDOUT, eval_prompts=min(cfg.eval_prompts, 200)),
        sampling=SamplingParams(max_new_tokens=SAMPLED_TOKENS, temperature=1.0),
        optim=OptimConfig(lr=PPO_LR, warmup_steps=0, max_steps=cfg.ppo_steps),
        run=RunConfig(name="ppo", output_dir=cfg.output_dir, seed=cfg.seed, overwrite=True, log_every=10,
                      eval_every=max(1, cfg.ppo_steps // 4), progress=cfg.progress),
        rl=RLConfig(group_size=1, prompts_per_step=64, updates_per_batch=4, minibatches=2, micro_batch=32,
                    kl_estimator="k1"),
        ppo=PPOSettings(reward_model=str(reward_model), gold_rater=RATER, kl_coef=PPO_KL_COEF),
    ))
    evals = [m for m in read_metrics(run_dir) if "eval/proxy_score" in m]
    first, last = evals[0], evals[-1]
    text = (f"held-out reward-model score {first['eval/proxy_score']:.2f} -> {last['eval/proxy_score']:.2f}, "
            f"KL to SFT {first['eval/kl']:.2f} -> {last['eval/kl']:.2f} nats, gold (rater) score "
            f"{first['eval/gold_score']:.2f} -> {last['eval/gold_score']:.2f} in {cfg.ppo_steps} steps")
    result = StageResult("PPO from the SFT policy against the reward model", text, time.perf_counter() - t0, run_dir,
                         last["eval/proxy_score"], PPOOutcome(first, last, evals))
    return result, run_dir / "final"


def feedback_items(cfg: DemoConfig, models: dict[str, Path]) -> tuple[list, list[dict[str, Any]]]:
    """Held-out prompts and pairwise campaign items of the models' answers to them (sampled at temperature 1,
    seeded): each prompt compares the next pair of models in turn (`model_items`), leaving out prompts where the
    two answers are the same (nothing to compare)."""
    from posttrain.config import SamplingParams
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.feedback.campaigns import model_items
    from posttrain.models.load import load_model
    from posttrain.sampling.sampler import ModelSampler, sample_messages

    prompts = load_records(HELDOUT, accept=(Prompt,), limit=cfg.feedback_prompts)
    answers = {}
    for n, (name, path) in enumerate(models.items()):
        # a seed per model: one shared seed would make two close policies draw the same tokens
        params = SamplingParams(temperature=1.0, max_new_tokens=SAMPLED_TOKENS, seed=cfg.seed * 100 + n)
        model, tokenizer = load_model(ModelConfig(name=str(path)))
        answers[name] = sample_messages(ModelSampler(model, tokenizer, progress=False), prompts, tokenizer, 1,
                                        params).texts
    items, _ = model_items([[m.to_dict() for m in p.prompt] for p in prompts], answers, "pairwise")
    return prompts, items


def feedback_stage(cfg: DemoConfig, models: dict[str, Path], console: Any) -> list[StageResult]:
    """Serve a pairwise campaign of the model versions' answers (`models`: name -> model directory, "sft" among
    them), judge it with simulated raters over HTTP, print its statistics and leaderboard, export the judgments and
    train a reward model on them, from the SFT policy."""
    import shutil

    from posttrain.extras import require

    for module in ("fastapi", "sqlalchemy", "alembic", "uvicorn"):
        require(module, "feedback", "the demo's feedback stage")
    from sqlalchemy.orm import Session

    from posttrain.feedback.analysis import campaign_stats, print_stats
    from posttrain.feedback.campaigns import create_campaign
    from posttrain.feedback.db import make_engine
    from posttrain.feedback.export import export_rows
    from posttrain.feedback.simulate import SimulatedHttpRater, add_raters, client_for, reference_index, serve_in_thread
    from posttrain.files import write_jsonl
    from posttrain.recipes.reward_model import RewardModelConfig, train
    from posttrain.tasks.arithmetic_raters import make_rater

    t0 = time.perf_counter()
    folder = Path(cfg.output_dir) / "feedback"
    shutil.rmtree(folder, ignore_errors=True)  # a new demo replaces the previous demo's campaign
    folder.mkdir(parents=True)
    db = f"sqlite:///{folder / 'feedback.db'}"
    prompts, items = feedback_items(cfg, models)
    versions = ", ".join(name.upper() for name in models)
    if not items:
        return [StageResult(f"Feedback: {versions} judged over HTTP", "no campaign: the policies answered every "
                            "prompt alike", time.perf_counter() - t0, folder)]
    names = [f"sim{i + 1}" for i in range(cfg.feedback_raters)]
    tokens = add_raters(db, names)
    engine = make_engine(db)
    with Session(engine) as s, s.begin():
        create_campaign(s, CAMPAIGN, "pairwise", items, overlap=cfg.feedback_raters)
    references = reference_index(prompts)
    with serve_in_thread(db) as url, client_for(url) as client:
        for i, name in enumerate(names):
            SimulatedHttpRater(make_rater(RATER), tokens[name], cfg.feedback_noise, cfg.seed * 1000 + i,
                               references).judge(client, CAMPAIGN)
    with Session(engine) as s:
        result = campaign_stats(s, CAMPAIGN, seed=cfg.seed)
        rows, _ = export_rows(s, CAMPAIGN)
    engine.dispose()
    print_stats(result, console)
    exported = write_jsonl(rows, folder / "judgments.jsonl")
    board = ", ".join(f"{r.model} {r.rating:.0f} ({r.ci_low:.0f}-{r.ci_high:.0f})" for r in result.leaderboard)
    alpha = "-" if result.alpha is None else f"{result.alpha:.2f}"
    judged = StageResult(
        f"Feedback: {cfg.feedback_raters} simulated raters (noise {cfg.feedback_noise:g}) judge {versions} over HTTP",
        f"{result.judgments} judgments of {result.items} items; alpha {alpha}; leaderboard {board}",
        time.perf_counter() - t0, folder, result.alpha if result.alpha is not None else float("nan"), result)

    t1 = time.perf_counter()
    run_dir = train(RewardModelConfig(
        model=ModelConfig(name=str(models["sft"])),
        data=DataConfig(train=str(exported), eval_fraction=0.2, max_length=PAIR_MAX_LENGTH, truncation="skip"),
        optim=OptimConfig(lr=3e-4, warmup_steps=10, batch_size=16, max_steps=cfg.feedback_rm_steps),
        run=RunConfig(name="rm-feedback", output_dir=cfg.output_dir, seed=cfg.seed, overwrite=True, log_every=10,
                      progress=cfg.progress),
    ))
    acc = last_logged(run_dir, "eval/accuracy")
    trained = StageResult("Reward model on the exported judgments",
                          f"{len(rows)} preference records; held-out accuracy on unseen judgments {acc:.1%}",
                          time.perf_counter() - t1, run_dir, acc)
    return [judged, trained]


def write_evaluation(cfg: DemoConfig, results: list[StageResult]) -> Path:
    """The demo's evaluation as `posttrain eval` writes one (docs/evaluation.md): OUTPUT_DIR/eval/results.json
    with each policy's held-out accuracy and the DPO-vs-SFT win rate, and samples.jsonl with every answer."""
    import hashlib
    import json

    from posttrain.eval.suite import figure
    from posttrain.files import write_json_atomic, write_jsonl

    out = Path(cfg.output_dir) / "eval"
    accuracy = [r for r in results if r.detail is not None and hasattr(r.detail, "accuracy")]
    models, rows, samples = [], [], []
    for r in accuracy:
        label = r.run_dir.name
        lineage = r.run_dir / "lineage.json"
        models.append({"label": label, "name": str(r.run_dir / "final"),
                       "lineage": json.loads(lineage.read_text()) if lineage.is_file() else None})
        rows.append(figure(label, HELDOUT, r.detail.accuracy, (r.detail.ci_low, r.detail.ci_high), r.detail.n))
        samples += [{"model": label, "task": HELDOUT, "prompt_index": i, "sample_index": 0, **s, "rm_score": None}
                    for i, s in enumerate(r.detail.samples)]
    prompts = [(s["prompt"], s["answer"]) for s in accuracy[0].detail.samples] if accuracy else []
    wins = [{"a": r.detail["a"], "b": "sft", "task": HELDOUT, "judge": f"rater:{r.detail['rater']}", "value": r.detail["win_rate"],
             "ci_low": r.detail["ci_low"], "ci_high": r.detail["ci_high"], "n": r.detail["n"],
             "wins": r.detail["wins"], "ties": r.detail["ties"], "losses": r.detail["losses"]}
            for r in results if isinstance(r.detail, dict)]
    write_json_atomic(out / "results.json", {
        "format": "posttrain-eval/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": models,
        "tasks": [{"name": HELDOUT, "n": len(prompts), "reward": "task",
                   "sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest()}],
        "settings": {"temperature": 0.0, "max_new_tokens": 48, "n_samples": 1, "seed": cfg.seed, "judge": RATER},
        "accuracy": rows, "pass_at_k": [], "rm_score": [], "length": [], "finish_reasons": [], "win_rates": wins,
        "ratings": [],
    })
    write_jsonl(samples, out / "samples.jsonl")
    return out


def run_demo(cfg: DemoConfig) -> list[StageResult]:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.rule("[bold]posttrain demo: the post-training loop on a tiny model, on this CPU")
    results = []
    sft, sft_model = sft_stage(cfg)
    results.append(sft)
    results.append(accuracy_stage(cfg, sft_model, "Eval: SFT policy, held-out accuracy"))
    if cfg.stages in ("all", "rl"):
        weak, weak_model = weak_sft_stage(cfg, sft.run_dir)
        results.append(weak)
        grpo_result, grpo_model = grpo_stage(cfg, weak_model)
        results.append(grpo_result)
    if cfg.stages == "all":
        pairs_result, pairs = pairs_stage(cfg, sft_model)
        results.append(pairs_result)
        rm_result = rm_stage(cfg, sft_model, pairs)
        results.append(rm_result)
        dpo_result, dpo_model = dpo_stage(cfg, sft_model, pairs)
        results.append(dpo_result)
        results.append(accuracy_stage(cfg, dpo_model, "Eval: DPO policy, held-out accuracy"))
        results.append(winrate_stage(cfg, dpo_model, sft_model))
        ppo_result, ppo_model = ppo_stage(cfg, sft_model, rm_result.run_dir / "final")
        results.append(ppo_result)
        results.append(winrate_stage(cfg, ppo_model, sft_model, "PPO"))
        versions = {"sft": sft_model, "dpo": dpo_model, "grpo": grpo_model, "ppo": ppo_model}
        results += feedback_stage(cfg, versions, console)

    table = Table(title="posttrain demo summary")
    for col in ("stage", "result", "time", "run directory"):
        table.add_column(col)
    for r in results:
        table.add_row(r.stage, r.result, f"{r.seconds:.0f} s", str(r.run_dir or ""))
    console.print(table)
    console.print(f"Runs are in [bold]{cfg.output_dir}/[/bold]: config.json, lineage.json, metrics.jsonl, "
                  "final/ (loads with transformers; README.md is its model card), samples.jsonl. TensorBoard: "
                  f"tensorboard --logdir {cfg.output_dir}")
    report = escape(str(write_demo_report(cfg, results)))
    console.print(f"Report (curves, evaluation, answers side by side): [bold]{report}[/bold]", soft_wrap=True)
    return results


def write_demo_report(cfg: DemoConfig, results: list[StageResult]) -> Path:
    """OUTPUT_DIR/report.html over the demo's runs (SFT, RM, DPO) and its evaluation."""
    from posttrain.eval.report import write_report

    runs = [str(r.run_dir) for r in results if r.run_dir is not None and (r.run_dir / "metrics.jsonl").is_file()]
    runs = list(dict.fromkeys(runs))  # the accuracy stages name the run they evaluated again
    return write_report([*runs, str(write_evaluation(cfg, results))], Path(cfg.output_dir) / "report.html",
                        title="posttrain demo report")
