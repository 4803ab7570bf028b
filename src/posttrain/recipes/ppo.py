"""RLHF with PPO (InstructGPT, arXiv:2203.02155; Ziegler et al., arXiv:1909.08593): the policy samples, a reward
model scores, and PPO (arXiv:1707.06347) pushes the policy toward higher scores with a KL leash to where it started.

Each step samples one completion (or G) for each of `rl.prompts_per_step` prompts and scores it with the reward
model (plus any other reward, `--rl.reward`). Every completion token then pays -β·KL_t to the reference (the
starting policy) and the last token also receives the score (rl/token_rewards.py); a value model, by default
initialised from the reward model, estimates the return from each token on, and GAE(γ, λ) (arXiv:1506.02438) turns
rewards and values into per-token advantages, whitened over the step. The policy then takes μ passes of minibatch
updates on the clipped surrogate, and the value model on the clipped value loss (losses/value.py), with one
optimizer. β is fixed or steered toward a target KL (rl/kl.py). With `--ppo.gold-rater`, each evaluation also
scores the policy's answers by a simulated rater (the "gold" judge the reward model was trained to imitate): its
curve next to the reward model's and the KL shows where the policy starts to game its reward model (Gao et al.,
arXiv:2210.10760). Reads top to bottom: config -> check inputs -> set up -> loop -> save; the online-RL step's
pieces are rl/engine.py's, shared with GRPO and RLOO.

    posttrain ppo --model.name runs/sft/final --ppo.reward-model runs/rm/final
    posttrain ppo --model.name runs/sft/final --ppo.reward-model runs/rm/final --ppo.kl-target 6  # adaptive β
    posttrain ppo ... --rl.reward 0.5*numeric          # the reward model's score plus a verifier's
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from posttrain.config import DistConfig, ModelConfig, OptimConfig, RunConfig, SamplingParams, VLLMConfig, check
from posttrain.data.records import Prompt
from posttrain.data.tokenize import use_chat_template
from posttrain.errors import ConfigError, ModelError
from posttrain.eval.document import document_run
from posttrain.files import write_jsonl
from posttrain.losses.value import clipped_value_loss
from posttrain.models.heads import (
    VALUE_HEAD,
    RewardModel,
    SharedValueHead,
    apply_reward_lora,
    load_classifier,
    save_reward_model,
)
from posttrain.models.last_layer import supports_last_layer_at
from posttrain.models.load import load_model, load_tokenizer, resolve_dtype, resolve_model_dir, save_model
from posttrain.models.reference import Reference
from posttrain.rewards.functions import resolve_reward
from posttrain.rewards.score import explain_completions
from posttrain.rl.advantages import gae, whiten
from posttrain.rl.batch import RolloutBatch, completion_logps_and_values, completion_values
from posttrain.rl.engine import (
    Layout,
    PromptOrder,
    fill_logps,
    global_moments,
    in_step,
    make_groups,
    micro_batches,
    my_share,
    policy_loss,
    policy_metrics,
    prepare_update,
    rollout_metrics,
    run_updates,
    sample_reference,
    sample_step,
    step_seeds,
    update_layout,
)
from posttrain.rl.kl import AdaptiveKLController, FixedKLController, kl_penalty
from posttrain.rl.samplers import push_weights, rollout_sampler
from posttrain.rl.setup import (
    PromptDataConfig,
    RLConfig,
    check_rl_optim,
    check_run_start,
    load_run_prompts,
    start_rl_run,
)
from posttrain.rl.setup import reward_spec as task_reward_spec
from posttrain.rl.token_rewards import explained_variance, penalize_unfinished, sequence_kl, token_rewards
from posttrain.sampling.sampler import ModelSampler, Sampler
from posttrain.sampling.vllm_sampler import VLLMSampler
from posttrain.training.checkpoint import seed_everything
from posttrain.training.distributed import Dist, all_reduce_sum, distributed, gather_to_main, parallelize
from posttrain.training.loop import end_step, finish_run, interruptible
from posttrain.training.rundir import resume_config, run_finished, run_path
from posttrain.training.summary import print_summary

# The held-out figures printed when training ends (with rl.reward, eval/proxy_score is that reward's score, or the sum's).
SUMMARY = {"eval/proxy_score": "held-out reward-model score {:.3f}", "eval/gold_score": "gold (rater) score {:.3f}",
           "eval/kl": "KL to the reference {:.2f} nats"}


@dataclass
class PPOSettings:
    """PPO's own settings: the reward model, the value model, the KL leash and GAE."""

    reward_model: str = ""
    """The reward model that scores each completion (`posttrain rm`'s final/, or any num_labels=1 sequence
    classifier). Unset: `--rl.reward` alone (a verifier, `module:function`, ...), and with neither, a built-in
    task's own checkable reward (PPO on a verifiable reward, as Tulu 3's RLVR, arXiv:2411.15124)."""
    value_model: Literal["auto", "reward", "policy", "shared"] = "auto"
    """What the value model starts from: the reward model's weights and head (`reward`: it already reads how good
    an answer is), the policy's weights with a new head (`policy`; needed when there is no reward model), or no
    second model (`shared`): a new head on the policy's own final hidden states, read from the policy's forward,
    so one model's memory and one forward; the value loss then moves the policy's features too. `auto`: `reward`
    with a reward model that reads the policy's tokens, else `policy`; config.json records the choice."""
    kl_coef: float = 0.05
    """β: each completion token's reward is -β·KL_t to the reference (the starting policy). The initial value
    when kl_target is set."""
    kl_target: float = 0.0
    """> 0: β adapts toward this KL (nats per completion, summed over its tokens; arXiv:1909.08593 §2.2, its 6).
    0: β stays kl_coef."""
    kl_horizon: int = 10000
    """Completions over which the adaptive controller corrects its error (the paper's 10,000)."""
    gamma: float = 1.0
    """GAE discount γ over completion tokens (1: a reward at the end counts fully at every token)."""
    lam: float = 0.95
    """GAE λ: 1 is the Monte-Carlo return (no bias, most variance), 0 one-step TD."""
    vf_coef: float = 0.1
    """Weight of the value loss in the loss that one optimizer minimises (TRL's 0.1)."""
    value_clip: float = 0.2
    """Clip each value within ± this of its value at sampling time (losses/value.py); inf: no clip."""
    whiten_advantages: bool = True
    """Shift and scale the step's advantages to mean 0, std 1 over its tokens (detail 7 of docs/algorithms/ppo.md)."""
    eos_penalty: float = 0.0
    """Subtract this from the score of a completion that never ended (it reached sampling.max_new_tokens without
    an end token or stop string): the reward model scores a cut-off answer as if it were whole. 0: none."""
    max_approx_kl: float = 0.0
    """> 0: stop the step's remaining passes when a minibatch's mean approximate KL to the sampling policy
    (½(log ρ)² per token) exceeds it (Spinning Up's early stop; 0.02-0.05 is usual). 0: never."""
    gold_rater: str = ""
    """A simulated rater of the built-in arithmetic task (`concise`, `correctness`, `worked`) whose hidden utility
    each evaluation logs as eval/gold_score next to the reward model's eval/proxy_score: the over-optimisation
    watch. Unset: no gold score."""
    retokenize: bool = False
    """Let a reward model with another tokenizer than the policy's score the completions' text in its own tokens.
    Without it, different tokenizers stop the run (a mix-up is likelier than an intent)."""

    def __post_init__(self) -> None:
        check(self.kl_coef >= 0, "ppo.kl_coef", "must be >= 0", self.kl_coef)
        check(self.kl_target >= 0, "ppo.kl_target", "must be >= 0 (0: a fixed β)", self.kl_target)
        check(self.kl_target == 0 or self.kl_coef > 0, "ppo.kl_coef", "must be > 0 for the adaptive controller to "
              "scale it (it multiplies β)", self.kl_coef)
        check(self.kl_horizon >= 1, "ppo.kl_horizon", "must be >= 1", self.kl_horizon)
        check(0 <= self.gamma <= 1, "ppo.gamma", "must be in [0, 1]", self.gamma)
        check(0 <= self.lam <= 1, "ppo.lam", "must be in [0, 1]", self.lam)
        check(self.vf_coef > 0, "ppo.vf_coef", "must be > 0 (the value model learns only from this term)",
              self.vf_coef)
        check(self.value_clip > 0, "ppo.value_clip", "must be > 0 (inf: no clip)", self.value_clip)
        check(self.eos_penalty >= 0, "ppo.eos_penalty", "must be >= 0 (it is subtracted)", self.eos_penalty)
        check(self.max_approx_kl >= 0, "ppo.max_approx_kl", "must be >= 0 (0: no early stop)", self.max_approx_kl)


@dataclass
class PPOConfig:
    """PPO: sample, score with a reward model, GAE with a value model, clipped updates of both, a KL leash."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=48, temperature=1.0))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=0, max_steps=100,
                                                                   weight_decay=0.0))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="ppo", log_every=5, eval_every=25))
    dist: DistConfig = field(default_factory=DistConfig)
    rl: RLConfig = field(default_factory=lambda: RLConfig(group_size=1, prompts_per_step=64, updates_per_batch=4,
                                                          minibatches=2, micro_batch=32, kl_estimator="k1"))
    """The online-RL loop. PPO's defaults: one completion per prompt (the value model is the baseline), 4 passes
    over each step's samples (TRL's num_ppo_epochs) in 2 minibatches, each one forward/backward of 32
    completions."""
    ppo: PPOSettings = field(default_factory=PPOSettings)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)

    def __post_init__(self) -> None:
        check_rl_optim(self.optim)
        check(self.rl.kl_beta == 0, "rl.kl_beta", "PPO puts the KL into the reward: set --ppo.kl-coef (and "
              "--ppo.kl-target for an adaptive one) instead", self.rl.kl_beta)
        check(self.rl.loss_aggregation == "token", "rl.loss_aggregation", "PPO averages its per-token losses over "
              "the step's tokens; only `token` is implemented", self.rl.loss_aggregation)
        check(self.dist.strategy != "fsdp" or self.ppo.value_model != "shared", "ppo.value_model", "shared (a head "
              "on the policy's body) is not available with --dist.strategy fsdp yet; use reward or policy (a value "
              "model of its own, sharded too) or --dist.strategy ddp", self.ppo.value_model)


class PolicyAndValue(torch.nn.Module):
    """The two trained models as one module, so that one optimizer, one gradient clip and one checkpoint hold both,
    and under torchrun one DistributedDataParallel wraps both. `value`: a second model (RewardModel), or a
    SharedValueHead on the policy (its head the only other weights)."""

    def __init__(self, policy: torch.nn.Module, value: RewardModel | SharedValueHead):
        super().__init__()
        self.policy = policy
        self.value = value

    def forward(self, loss_fn, batch: RolloutBatch):
        """`loss_fn(self, batch)`: the whole loss is one call of this module, so that under DDP (which synchronises
        gradients only for forwards through its own wrapper) both models' gradients are averaged."""
        return loss_fn(self, batch)


# -- checks and set-up ------------------------------------------------------------------------------------------


def reward_spec(cfg: PPOConfig) -> str:
    """The reward each completion is scored with: `rm:REWARD_MODEL`, plus rl.reward when both are given; with
    neither, a built-in task's own reward (`rl.engine.reward_spec`)."""
    terms = [f"rm:{cfg.ppo.reward_model}"] if cfg.ppo.reward_model else []
    terms += [cfg.rl.reward] if cfg.rl.reward else []
    if terms:
        return "+".join(terms)
    try:
        return task_reward_spec("", cfg.data.train, "rl.reward")
    except ConfigError:
        raise ConfigError(f"ppo.reward_model is required for {cfg.data.train!r} (train one with: posttrain rm "
                          f"--model.name {cfg.model.name} --data.train PAIRS.jsonl), or give a reward with "
                          "--rl.reward (a built-in task brings its own)") from None


def check_reward_model(cfg: PPOConfig, policy_tokenizer) -> bool:
    """A one-line ModelError or ConfigError, before anything is loaded in full, when the reward model is not one or
    reads other tokens than the policy writes (unless ppo.retokenize); else whether it reads the policy's tokens."""
    try:
        path = resolve_model_dir(cfg.ppo.reward_model)
    except ModelError as e:  # say which of the run's models the path was given for
        raise ModelError(f"ppo.reward_model={cfg.ppo.reward_model}: {e}") from None
    _, new_head = load_classifier(path, torch.float32)
    if new_head:
        raise ModelError(f"ppo.reward_model={cfg.ppo.reward_model}: has no reward head (no `score` weights; is it a "
                         f"causal LM?); train one with: posttrain rm --model.name {cfg.ppo.reward_model}")
    same = load_tokenizer(str(path)).get_vocab() == policy_tokenizer.get_vocab()
    if not same and not cfg.ppo.retokenize:
        raise ConfigError(f"ppo.reward_model={cfg.ppo.reward_model}: its tokenizer differs from the policy's "
                          f"({cfg.model.name}); pass --ppo.retokenize to let it score the completions' text in its "
                          "own tokens, or train the reward model from the policy")
    if not same and cfg.ppo.value_model == "reward":
        raise ConfigError("ppo.value_model=reward: the value model reads the policy's tokens, but the reward model "
                          "has another tokenizer; use --ppo.value-model policy or shared")
    return same


def resolve_value_model(cfg: PPOConfig, same_tokens: bool) -> PPOConfig:
    """`cfg` with ppo.value_model `auto` made `reward` (a reward model that reads the policy's tokens) or `policy`,
    before the run is written, so that config.json (and a resumed run) records what was trained."""
    if cfg.ppo.value_model != "auto":
        return cfg
    chosen = "reward" if cfg.ppo.reward_model and same_tokens else "policy"
    return replace(cfg, ppo=replace(cfg.ppo, value_model=chosen))


def load_value_model(cfg: PPOConfig, device: torch.device, policy: torch.nn.Module) -> RewardModel | SharedValueHead:
    """The value model: the reward model's weights and head, or the policy's weights with a new head (seeded); LoRA
    adapters on its body when the policy has them (the head trained in full). `shared`: a new head on `policy`
    itself, trained in full (under LoRA its body learns through the policy's adapters)."""
    if cfg.ppo.value_model == "shared":
        return SharedValueHead(policy).to(device).train()
    source = cfg.ppo.reward_model if cfg.ppo.value_model == "reward" else cfg.model.name
    classifier, _ = load_classifier(resolve_model_dir(source), resolve_dtype(cfg.model.dtype, device), cfg.run.seed)
    if cfg.model.lora_r > 0:
        classifier = apply_reward_lora(classifier, cfg.model)
    return RewardModel(classifier).to(device).train()


def gold_scorer(cfg: PPOConfig, prompts: list[Prompt], source: str | None):
    """The gold rater's utility, `(prompt, completion) -> float`, or None; a ConfigError naming the raters when the
    name is unknown or there are no held-out prompts for it to score, a DataError naming the first held-out row
    (`source`'s file:line) that lacks what it reads."""
    if not cfg.ppo.gold_rater:
        return None
    from posttrain.tasks.arithmetic_raters import check_references, make_rater

    try:
        rater = make_rater(cfg.ppo.gold_rater)
    except ValueError as e:
        raise ConfigError(f"ppo.gold_rater={cfg.ppo.gold_rater!r}: {e}") from None
    if not source:
        raise ConfigError(f"ppo.gold_rater={cfg.ppo.gold_rater!r}: scores the held-out answers, and this run holds "
                          "none out; set --data.eval-prompts N (and --data.eval FILE for a prompts file of your own)")
    check_references(prompts, source)
    return rater.utility


# -- the step ---------------------------------------------------------------------------------------------------


def score_step(values: RewardModel, parts: list[list[RolloutBatch]], scores: torch.Tensor, kl_coef: float,
               cfg: PPOConfig, d: Dist) -> dict[str, float]:
    """Per batch: the value model's values at sampling time, per-token rewards (score at the last token, -β·KL on
    each), GAE advantages and returns; then the advantages whitened over the whole step (every process's tokens).
    Returns KL and value metrics of the rollout, over every process's. `scores`: (N,) one per rollout completion."""
    batches = [b for p in parts for b in p]
    seq_kls, explained_parts = [], []
    values.eval()
    with torch.no_grad():
        for b in batches:
            b.old_values = torch.where(b.mask, completion_values(values, b), 0.0)  # (C, L)
            kl = torch.where(b.mask, kl_penalty(b.old_logps, b.ref_logps, cfg.rl.kl_estimator), 0.0)  # (C, L)
            rewards = token_rewards(scores[b.completions], kl, b.mask, kl_coef)  # (C, L)
            b.advantages, b.returns = gae(rewards, b.old_values, b.mask, cfg.ppo.gamma, cfg.ppo.lam)  # (C, L) each
            seq_kls.append(sequence_kl(kl, b.mask)[torch.tensor(b.completions) >= 0])  # (C,) less an empty stand-in
            explained_parts.append((b.old_values[b.mask], b.returns[b.mask]))
    values.train()
    real = [b for b in batches if b.tokens > 0]
    flat = torch.cat([b.advantages[b.mask] for b in real]) if real else torch.zeros(0)  # every token of the step
    n, mean, variance = global_moments(flat, d)
    if cfg.ppo.whiten_advantages and n >= 2:
        flat = whiten(flat, moments=(mean, variance))
        at = 0
        for b in real:
            b.advantages = b.advantages.masked_scatter(b.mask, flat[at : at + b.tokens])
            at += b.tokens
    seq_kl = torch.cat(seq_kls) if seq_kls else torch.zeros(0)  # (N,)
    v = torch.cat([x for x, _ in explained_parts]) if explained_parts else torch.zeros(0)  # (tokens,)
    r = torch.cat([y for _, y in explained_parts]) if explained_parts else torch.zeros(0)  # (tokens,)
    kl_mean = global_moments(seq_kl, d)[1]
    explained = explained_variance(v, r, torch.ones_like(v, dtype=torch.bool), lambda x: global_moments(x, d)[2])
    return {"ppo/kl": kl_mean, "ppo/non_score_reward": -kl_coef * kl_mean, "train/explained_variance": explained,
            "ppo/value_mean": global_moments(v, d)[1], "ppo/return_mean": global_moments(r, d)[1]}


def ppo_loss(cfg: PPOConfig, aggregate, model: torch.nn.Module, batch: RolloutBatch
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate of the policy + vf_coef x clipped value loss, summed over the micro-batch's tokens, and
    metric sums (value loss and its clip count per token, besides the policy's). `model`: the PolicyAndValue, or
    the DDP wrapping it (one call of it computes both terms)."""
    return model(lambda m, b: ppo_terms(cfg, aggregate, m, b), batch)


def ppo_terms(cfg: PPOConfig, aggregate, model: PolicyAndValue, batch: RolloutBatch
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """ppo_loss's terms. With a shared value head, one forward of the policy gives both, and the value loss's
    gradient reaches the policy's body: PPO's combined objective for parameters shared by policy and value
    function (arXiv:1707.06347 §5, eq. 9; vf_coef is its c1)."""
    if isinstance(model.value, SharedValueHead):
        logps, entropy, values = completion_logps_and_values(model.policy, model.value.head, batch,
                                                             with_entropy=True)  # (C, L) each
        loss, sums = policy_loss(cfg.rl, aggregate, model.policy, batch, (logps, entropy))
    else:
        loss, sums = policy_loss(cfg.rl, aggregate, model.policy, batch)
        values = completion_values(model.value, batch)  # (C, L)
    per_token, clipped = clipped_value_loss(values, batch.old_values, batch.returns, batch.mask, cfg.ppo.value_clip)
    value_loss, _ = aggregate(per_token, batch.mask)
    sums["value_loss_sum"] = float(value_loss.detach())
    sums["value_clip_tokens"] = float(clipped.sum())
    return loss + cfg.ppo.vf_coef * value_loss, sums


# -- the recipe -------------------------------------------------------------------------------------------------


def train(cfg: PPOConfig, given: Collection[str] | None = None) -> Path:
    """Train; returns the run directory. Resuming, the saved config is used (training/rundir.py::resume_config)."""
    cfg = resume_config(cfg, given)
    with distributed(cfg.run.device, cfg.run.threads) as d:
        return run_ppo(cfg, d)


def run_ppo(cfg: PPOConfig, d: Dist) -> Path:
    if run_finished(cfg.run, d.is_main):  # resuming a finished run changes nothing
        return run_path(cfg.run)
    # -- check every input before anything is sampled or written -----------------------------------------
    tokenizer = load_tokenizer(cfg.model.name)
    use_chat_template(tokenizer, cfg.data.chat_template)
    spec = reward_spec(cfg)
    if cfg.ppo.reward_model:
        cfg = resolve_value_model(cfg, check_reward_model(cfg, tokenizer))
    elif cfg.ppo.value_model == "reward":
        raise ConfigError("ppo.value_model=reward needs ppo.reward_model; without a reward model use "
                          "--ppo.value-model policy or shared")
    cfg = resolve_value_model(cfg, False)
    if not (cfg.ppo.reward_model or cfg.rl.reward) and d.is_main:
        print(f"posttrain ppo: no --ppo.reward-model: each completion is scored by the task's own reward, {spec} "
              f"({cfg.data.train}); value model: {cfg.ppo.value_model}", file=sys.stderr)
    reward = resolve_reward(spec, tokenizer=tokenizer, device=cfg.run.device,
                            option="reward" if cfg.ppo.reward_model else "rl.reward")
    prompts = load_run_prompts(cfg.data, tokenizer, cfg.model.name, reward, reward)
    gold = gold_scorer(cfg, prompts.heldout, prompts.eval_source)
    order = PromptOrder(len(prompts.train), cfg.rl.prompts_per_step, cfg.run.seed)
    check_run_start(cfg, d, len(prompts.heldout))

    # -- set up ---------------------------------------------------------------------------------------------
    seed_everything(cfg.run.seed)
    policy, _ = load_model(cfg.model, d.device)
    reference = Reference(policy, keep_copy=True)  # the starting policy (under LoRA: the base, adapters off)
    value = load_value_model(cfg, d.device, policy)
    layout = update_layout(policy, tokenizer, cfg.data.share_prompt, d.device, supports_last_layer_at(value.backbone))
    policy.train()
    model = PolicyAndValue(policy, value)
    model = parallelize(model, d, cfg.dist, reference)  # DDP or FSDP2 under torchrun (--dist.strategy)
    run, optimizer, scheduler = start_rl_run(cfg, d, model, order.steps_per_epoch, prompts, "ppo", spec)
    controller = (AdaptiveKLController(cfg.ppo.kl_coef, cfg.ppo.kl_target, cfg.ppo.kl_horizon) if cfg.ppo.kl_target
                  else FixedKLController(cfg.ppo.kl_coef))
    if "kl_controller" in run.state:  # resumed: β as it was after the checkpoint's step
        controller.load_state_dict(run.state["kl_controller"])
    group_size = cfg.rl.group_size
    sampler = rollout_sampler(cfg, policy, tokenizer)  # the built-in sampler, or a vLLM engine (--rl.sampler)
    engine = sampler if isinstance(sampler, VLLMSampler) else None  # its weights are pushed after each update
    eval_sampler = engine or ModelSampler(policy, tokenizer, batch_size=64)

    def evaluate_heldout(step: int) -> dict[str, float]:
        metrics, samples = evaluate_ppo(cfg, policy, reference, eval_sampler, prompts.heldout, prompts.heldout_ids,
                                        reward, gold, layout, d)
        if d.is_main:
            write_jsonl(samples, run.dir / "samples" / f"eval-step-{step}.jsonl")
        return metrics

    # -- loop -----------------------------------------------------------------------------------------------
    completions_done = 0
    with interruptible(run, model, optimizer, scheduler):  # Ctrl-C: keep the last step, say how to resume
        if prompts.heldout and run.start_step == 0:
            run.sink.log(0, evaluate_heldout(0))  # the starting policy, to compare with
        for step in range(run.start_step, run.total_steps):
            sampled = sample_step(sampler, reward, prompts, order, step, cfg, d)
            rollout, scores = sampled.rollout, sampled.scores
            raw = torch.tensor(scores.total, dtype=torch.float32)  # (N,)
            ended = torch.tensor([r != "length" for r in rollout.finish_reasons])  # (N,)
            penalized = penalize_unfinished(raw, ended, cfg.ppo.eos_penalty)  # (N,)
            groups = make_groups(rollout, torch.zeros(len(rollout)), group_size, sampled.positions)
            t1 = time.perf_counter()
            parts, aggregate = prepare_update(groups, cfg.rl, layout, cfg.sampling.max_new_tokens, reference, policy,
                                              d)
            scored = score_step(value, parts, penalized, controller.value, cfg, d)
            done = run_updates(model, optimizer, scheduler, parts, cfg.rl, lambda m, b: ppo_loss(cfg, aggregate, m, b),
                               cfg.optim.max_grad_norm, run, step + 1, d, cfg.ppo.max_approx_kl)
            update_seconds = time.perf_counter() - t1
            sync = push_weights(engine, policy)  # before end_step: a held-out evaluation there samples with it
            kl_coef = controller.value  # the β this step's rewards used
            n_step = cfg.rl.prompts_per_step * group_size  # completions of the step, over every process
            controller.update(scored["ppo/kl"], n_step)
            run.state["kl_controller"] = controller.state_dict()
            completions_done += n_step
            tokens = sum(len(p) + len(c) for p, c in zip(rollout.prompt_ids, rollout.completion_ids))
            n_tokens = max(done.totals.get("tokens", 0.0), 1.0)
            metrics = {
                **policy_metrics(done), **scored,
                **rollout_metrics(rollout, scores, penalized, group_size, torch.zeros(0, dtype=torch.bool),
                                  sampled.seconds, d),
                "ppo/score": global_moments(raw, d)[1], "ppo/kl_coef": kl_coef,
                "train/value_loss": done.totals.get("value_loss_sum", 0.0) / n_tokens,
                "train/value_clip_ratio": done.totals.get("value_clip_tokens", 0.0) / n_tokens,
                "train/passes": float(done.passes), "train/lr": scheduler.get_last_lr()[0],
                "perf/update_seconds": update_seconds,
                "perf/trainer_tokens_per_second": done.trained_tokens / max(update_seconds, 1e-9),
                "perf/completions_per_second": completions_done / max(1e-9, time.perf_counter() - run.t0), **sync,
            }
            metrics.pop("train/frac_reward_zero_std", None)  # a group statistic; PPO has no groups
            end_step(run, step + 1, metrics, tokens, (lambda s=step + 1: evaluate_heldout(s)) if prompts.heldout
                     else None, model, optimizer, scheduler)

    # -- save -----------------------------------------------------------------------------------------------
    def save(plain: PolicyAndValue, out: Path) -> None:
        save_model(plain.policy, tokenizer, out, cfg.model)
        if isinstance(plain.value, SharedValueHead):
            plain.value.save(out / VALUE_HEAD)
        else:
            save_reward_model(plain.value, tokenizer, out / "value_model", {"kind": "ppo_value", "pooling": "last_token"})

    finish_run(run, model, tokenizer, save=save)
    if d.is_main:
        document_run(run.dir, "ppo")  # report.html and the model card final/README.md
    rm_alone = cfg.ppo.reward_model and not cfg.rl.reward
    summary = SUMMARY if rm_alone else {**SUMMARY, "eval/proxy_score": "held-out reward {:.3f}"}
    return print_summary(run.dir, "ppo", summary, cfg.run.progress and d.is_main)


def evaluate_ppo(cfg: PPOConfig, policy: torch.nn.Module, reference: Reference, sampler: Sampler,
                 prompts: list[Prompt], ids: list[list[int]], reward, gold, layout: Layout, d: Dist
                 ) -> tuple[dict[str, float], list[dict]]:
    """One completion per held-out prompt, sampled as in training from seeds that are the same at every
    evaluation: the reward model's mean score (eval/proxy_score), the gold rater's (eval/gold_score) and the mean
    KL of the completions to the reference (eval/kl, nats per completion: Σ_t log π/π_ref, k1 on the policy's own
    samples), over every process's share of the prompts; and the samples (all of them on the main process)."""
    t0 = time.perf_counter()
    indices = my_share(list(range(len(ids))), d)
    proxy, golds, kls, lengths, texts, batches, reasons = [], [], torch.zeros(len(indices)), [], [], [], []
    if indices:
        seeds = step_seeds(cfg.run.seed, -1, indices)  # step -1: never a training step's
        rollout = sampler.sample([ids[i] for i in indices], 1, cfg.sampling, seeds=seeds)
        texts, lengths = rollout.texts, [len(c) for c in rollout.completion_ids]
        mine = [prompts[i] for i in indices]
        scored, reasons = explain_completions(reward, mine, texts)  # the reason too: samples/eval-step-N.jsonl
        proxy = scored.total
        golds = [gold(p, t) for p, t in zip(mine, texts)] if gold else []
        groups = make_groups(rollout, torch.zeros(len(rollout)), 1, list(range(len(indices))))
        batches = micro_batches(groups, cfg.rl, layout, lambda b: 0)
    batches = in_step(batches, layout, d)  # as many on every process: a sharded reference computes in step
    if not isinstance(sampler, ModelSampler):  # an engine's log-probs: the KL is the trainer's policy's own
        fill_logps(policy, batches, "old_logps")
    fill_logps(reference, batches, "ref_logps")
    for b in batches:
        if b.tokens > 0:  # not a stand-in
            kls[b.completions] = sequence_kl(b.old_logps - b.ref_logps, b.mask)
    n, proxy_sum, kl_sum, length_sum, gold_sum = all_reduce_sum(
        torch.tensor([len(indices), sum(proxy), float(kls.sum()), sum(lengths), sum(golds)]), d).tolist()
    n = max(n, 1.0)
    metrics = {"eval/proxy_score": proxy_sum / n, "eval/kl": kl_sum / n, "eval/mean_length": length_sum / n}
    if gold:
        metrics["eval/gold_score"] = gold_sum / n
    metrics["perf/eval_seconds"] = time.perf_counter() - t0
    samples = [{"prompt": prompts[i].text, "completion": t, "proxy_score": s, "reason": why,
                **({"gold_score": g} if gold else {}),
                **sample_reference(prompts[i], ("proxy_score", "gold_score", "reason"))}
               for i, t, s, g, why in zip(indices, texts, proxy, golds or [None] * len(proxy), reasons)]
    return metrics, gather_to_main(samples, d)
