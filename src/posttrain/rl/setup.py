"""What an online-RL run (GRPO, RLOO, PPO) sets up before its first step: its options (`PromptDataConfig`,
`RLConfig`), its reward spec and prompts, and the checks that refuse a bad run before anything is sampled.
The step itself is `rl/engine.py`'s."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch

from posttrain.config import OptimConfig, check
from posttrain.data.load import (
    BUILTIN_PREFIX,
    default_heldout,
    describe_source,
    load_records,
    parse_builtin,
    row_location,
)
from posttrain.data.records import Prompt
from posttrain.data.splits import warn_overlap
from posttrain.data.tokenize import check_prompt_template, tokenize_prompt
from posttrain.errors import ConfigError, DataError
from posttrain.rewards.functions import check_reference_fields
from posttrain.rl.samplers import check_sampler
from posttrain.tasks import TASKS
from posttrain.training.distributed import Dist, check_heldout
from posttrain.training.loop import Run, start_run
from posttrain.training.metrics import check_trackers
from posttrain.training.optim import build_optimizer, build_scheduler
from posttrain.training.rundir import check_run_dir


@dataclass
class PromptDataConfig:
    """The prompts RL samples from, and the held-out prompts it is measured on."""

    train: str = "builtin:arithmetic?ops=+&digits=2&pad=0.7"
    """Prompts with the reference fields the reward reads (e.g. `answer`): a JSONL/JSON/CSV/Parquet file, a
    datasets folder, `builtin:NAME` or `reasoning_gym:NAME?size=N&seed=S` (extra `gym`). Only the `prompt`
    (a string or a message list) and the reference fields are read; a `completion` is ignored."""
    eval: str | None = None
    """Held-out prompts, same forms. Unset: a built-in task's held-out split (`builtin:NAME/heldout`), else none."""
    eval_prompts: int = 200
    """Held-out prompts to measure (greedy completions scored by the eval reward); 0 measures nothing."""
    limit: int | None = None
    """Use only the first N training prompts."""
    max_prompt_length: int = 512
    """A prompt longer than this (in tokens, chat template applied) stops the run before sampling, naming it."""
    chat_template: str | None = None
    """Chat template for message-list prompts: a Jinja file or a built-in name (`chatml`); unset: the model's."""
    share_prompt: bool = True
    """In the update, one row per group [prompt, c_1, ..., c_G] with a block mask, so the prompt goes through
    the model once per group, not G times (the log-probs are the same). Needs a 4D mask (sdpa, eager)."""

    def __post_init__(self) -> None:
        check(bool(self.train.strip()), "data.train", "must name the prompts to sample from", self.train)
        check(self.eval_prompts >= 0, "data.eval_prompts", "must be >= 0 (0 measures nothing)", self.eval_prompts)
        check(self.limit is None or self.limit >= 1, "data.limit", "must be >= 1 when set", self.limit)
        check(self.max_prompt_length >= 1, "data.max_prompt_length", "must be >= 1", self.max_prompt_length)


@dataclass
class RLConfig:
    """The online-RL loop: how many prompts and samples a step takes, how the policy is updated on them."""

    reward: str = ""
    """The reward (docs/rewards.md): a spec such as `numeric`, `math`, `code`, `numeric+0.2*think_format`,
    `rm:runs/rm/final` or `module:function`. Unset: a built-in task's own reward (`numeric` for arithmetic)."""
    eval_reward: str = ""
    """What the held-out accuracy is scored with (mean over greedy completions; a 0/1 verifier gives accuracy).
    Unset: the task's own reward for a built-in task, else `reward`."""
    group_size: int = 8
    """Completions sampled per prompt (G); GRPO's and RLOO's advantages compare the completions of one prompt (at
    least 2). PPO's baseline is its value model, so 1 there (its default) is usual."""
    prompts_per_step: int = 32
    """Prompts per step, over all processes (under torchrun a multiple of minibatches x processes). A step samples
    prompts_per_step x group_size completions."""
    sample_batch: int = 0
    """Rows (prompts x G) the sampler decodes together; 0: the whole step's in one batch (fastest while it fits in
    memory). Lower it for long completions or large models; the samples do not change (per-prompt streams)."""
    micro_batch: int = 8
    """Groups (a prompt and its G completions) per forward/backward in the update; lower it if memory runs out.
    It changes nothing but memory and speed: the loss is normalised over the whole step."""
    updates_per_batch: int = 1
    """μ: passes over each step's samples (arXiv:2402.03300 Alg. 1). With 1 pass and 1 minibatch the sampler's
    log-probs are the old policy's (no extra forward); more reuse the samples, the clipped ratio keeping each
    update near the policy that sampled them."""
    minibatches: int = 1
    """Optimizer steps per pass: the step's groups are split into this many minibatches."""
    old_logps: Literal["auto", "sampler", "forward"] = "auto"
    """Where the old policy's log-probs (the ratio's denominator) come from. `sampler`: the sampler's own, drawn
    with the same weights (no extra forward; TRL's PPOTrainer takes them from generate's scores too). `forward`:
    a no-grad forward of the policy before the step's first update. `auto`: the sampler's where they equal a
    forward's within 1e-4 (a float32 policy, tests/sampling/test_sampler.py), and with one pass and one minibatch;
    a forward for a lower-precision policy trained on its samples more than once (its incremental decoding rounds
    differently from a full forward), and always with truncated importance sampling (rl.sampler=vllm, rl.tis_cap
    > 0), which compares the forward's log-probs with the engine's."""
    eps_low: float = 0.2
    """Clip the importance ratio below at 1 - eps_low (PPO's ε, arXiv:1707.06347)."""
    eps_high: float = 0.2
    """Clip it above at 1 + eps_high; DAPO's clip-higher uses 0.28 (arXiv:2503.14476 §3.1)."""
    loss_aggregation: Literal["token", "sequence", "constant"] = "token"
    """How per-token losses become the step's loss. `token`: mean over every completion token of the step
    (DAPO §3.3; long completions weigh by their length). `sequence`: each completion's token mean, averaged
    over completions (GRPO's eq. 3). `constant`: token sums over completions x max_new_tokens (Dr. GRPO,
    arXiv:2503.20783: no length bias)."""
    kl_beta: float = 0.0
    """β of the KL penalty to the reference (the starting policy; the base with adapters off under LoRA),
    added to the per-token loss (GRPO eq. 3). 0: no reference is kept or computed (DAPO, Dr. GRPO). PPO keeps
    it at 0 and puts the KL into the reward instead (`--ppo.kl-coef`)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator per token (rl/kl.py): `k3` (GRPO's, unbiased, >= 0), `k1` (log-ratio), `k2` (squared/2)."""
    sampler: Literal["builtin", "vllm"] = "builtin"
    """What samples the rollouts: `builtin`, posttrain's KV-cache sampler on the policy itself; `vllm`, a vLLM engine
    in this process (sampling/vllm_sampler.py, `--vllm.*`; an optional install, docs/scale.md), to which the policy's
    weights (LoRA merged) are pushed after every update. One process only (not under torchrun); GRPO, RLOO and PPO."""
    tis_cap: float = 3.0
    """With `sampler=vllm`: truncated importance sampling (rl/mismatch.py). Each token's policy-gradient loss is
    weighted by min(π_old/π_engine, tis_cap), π_old from a forward of the policy before the update, correcting for
    the engine computing the policy's probabilities differently from the trainer (TRL's default cap is 3). 0:
    no correction and no extra forward; the engine's log-probs then serve as the old policy's. Ignored by the
    built-in sampler, whose log-probs are the trainer's own."""
    drop_zero_variance: bool = False
    """Leave out of the update the groups whose G rewards are all equal (their advantages are all 0; DAPO's
    dynamic sampling, arXiv:2503.14476 §3.2, without the resampling): the loss is averaged over informative
    groups only, and a minibatch with none is no update at all (a zero-gradient AdamW step would still move the
    weights by momentum and weight decay)."""

    def __post_init__(self) -> None:
        check(self.group_size >= 1, "rl.group_size", "must be >= 1", self.group_size)
        check(self.prompts_per_step >= 1, "rl.prompts_per_step", "must be >= 1", self.prompts_per_step)
        check(self.micro_batch >= 1, "rl.micro_batch", "must be >= 1", self.micro_batch)
        check(self.sample_batch >= 0, "rl.sample_batch", "must be >= 0 (0: the whole step at once)", self.sample_batch)
        check(self.updates_per_batch >= 1, "rl.updates_per_batch", "must be >= 1", self.updates_per_batch)
        check(1 <= self.minibatches <= self.prompts_per_step, "rl.minibatches",
              f"must be between 1 and rl.prompts_per_step ({self.prompts_per_step})", self.minibatches)
        check(0 <= self.eps_low < 1, "rl.eps_low", "must be in [0, 1)", self.eps_low)
        check(self.eps_high >= 0, "rl.eps_high", "must be >= 0", self.eps_high)
        check(self.kl_beta >= 0, "rl.kl_beta", "must be >= 0 (0: no KL term)", self.kl_beta)
        check(self.sampler in ("builtin", "vllm"), "rl.sampler", "must be builtin or vllm", self.sampler)
        check(self.tis_cap == 0 or self.tis_cap >= 1, "rl.tis_cap", "must be 0 (no correction) or >= 1: the weight is "
              "1 where trainer and engine agree, and a cap below 1 would shrink those tokens' gradients too",
              self.tis_cap)
        check(not (self.corrects_mismatch and self.old_logps == "sampler"), "rl.old_logps",
              "'sampler' takes the engine's log-probs as the old policy's, but truncated importance sampling "
              "(rl.sampler=vllm, rl.tis_cap > 0) compares the engine's with the trainer's own from a forward: leave "
              "rl.old_logps auto, or set rl.tis_cap 0 to use the engine's log-probs uncorrected", self.old_logps)

    @property
    def corrects_mismatch(self) -> bool:
        """Whether the update weighs tokens by truncated importance sampling (vLLM samples, tis_cap > 0)."""
        return self.sampler == "vllm" and self.tis_cap > 0

    @property
    def reuses_samples(self) -> bool:
        """Whether the weights change before the samples' last use (several passes or minibatches)."""
        return self.updates_per_batch > 1 or self.minibatches > 1

    def recomputes_old_logps(self, policy: torch.nn.Module) -> bool:
        """Whether the old policy's log-probs come from a no-grad forward of `policy` rather than the sampler."""
        if self.old_logps != "auto":
            return self.old_logps == "forward"
        if self.corrects_mismatch:  # TIS compares the trainer's log-probs with the engine's
            return True
        return self.reuses_samples and next(policy.parameters()).dtype != torch.float32

# -- rewards and prompts ----------------------------------------------------------------------------------


def reward_spec(spec: str, source: str, what: str) -> str:
    """`spec`, or when it is empty the built-in task's own reward (`tasks.TASKS[NAME].reward`); a ConfigError
    naming `what` (the option) when there is neither."""
    if spec:
        return spec
    if source.startswith(BUILTIN_PREFIX):
        task = TASKS.get(parse_builtin(source)[0])
        if task is not None and task.reward is not None:
            return task.reward
    raise ConfigError(f"{what} is required for {source!r} (a built-in task brings its own): e.g. --rl.reward numeric, "
                      "--rl.reward math or --rl.reward my_module:my_reward (docs/rewards.md)")


def eval_reward_spec(eval_spec: str, train_spec: str, eval_source: str) -> str:
    """What held-out completions are scored with: `eval_spec`, else a built-in task's own reward, else the
    training reward."""
    if eval_spec:
        return eval_spec
    try:
        return reward_spec("", eval_source, "rl.eval_reward")
    except ConfigError:
        return train_spec


def heldout_source(data: PromptDataConfig) -> str | None:
    """data.eval, or a built-in task's held-out split (`builtin:NAME/heldout?OPTIONS`), or None."""
    if data.eval or data.eval_prompts == 0:
        return data.eval if data.eval_prompts else None
    return default_heldout(data.train)


def load_prompts(source: str, tokenizer, limit: int | None, max_length: int, model: str = "the model"
                 ) -> tuple[list[Prompt], list[list[int]]]:
    """The Prompt records of `source` and their token ids (chat template applied, assistant turn opened);
    a DataError naming the first prompt longer than `max_length` tokens, or a message list `model` has no chat
    template for."""
    prompts = load_records(source, accept=(Prompt,), limit=limit)
    if not prompts:
        raise DataError(f"{source}: holds no prompts")
    check_prompt_template(prompts, tokenizer, source, model, "pass --data.chat-template chatml (or a Jinja file), or "
                          'give the prompts as plain strings ("prompt": "What is 2+3?")')
    ids = [tokenize_prompt(p.prompt, tokenizer, plain=p.plain) for p in prompts]
    for i, row in enumerate(ids, start=1):
        if len(row) > max_length:
            raise DataError(f"{row_location(source, i)}: the prompt is {len(row)} tokens, over data.max_prompt_length="
                            f"{max_length}; raise it or shorten the prompt")
    return prompts, ids


@dataclass
class RunPrompts:
    """An online-RL run's prompts, read and checked before anything is sampled: the training ones and the held-out
    ones (none when the run holds none out), each with its token ids (chat template applied, assistant turn
    opened)."""

    train: list[Prompt]
    train_ids: list[list[int]]
    eval_source: str | None  # where the held-out prompts come from (`heldout_source`)
    heldout: list[Prompt]
    heldout_ids: list[list[int]]


def load_run_prompts(data: PromptDataConfig, tokenizer, model_name: str, reward: Any, eval_reward: Any
                     ) -> RunPrompts:
    """`data`'s training and held-out prompts (`load_prompts`), every row checked for the fields its reward reads
    (`eval_reward` for the held-out ones), naming the first row that lacks one by its file:line."""
    train, train_ids = load_prompts(data.train, tokenizer, data.limit, data.max_prompt_length, model_name)
    check_reference_fields(reward, train, data.train)
    eval_source = heldout_source(data)
    heldout, heldout_ids = [], []
    if eval_source:
        heldout, heldout_ids = load_prompts(eval_source, tokenizer, data.eval_prompts, data.max_prompt_length,
                                            model_name)
        check_reference_fields(eval_reward, heldout, eval_source)
        warn_overlap(train, heldout, data.train, eval_source)  # --data.eval naming the training prompts
    return RunPrompts(train, train_ids, eval_source, heldout, heldout_ids)

# -- checks before the first step -------------------------------------------------------------------------


def check_rl_optim(optim: OptimConfig) -> None:
    """A ConfigError when --optim.batch-size or --optim.grad-accum is set: the RL loop sizes its batches with its
    own options, and would ignore them (TRL users map per_device_train_batch_size and gradient_accumulation_steps
    to these)."""
    default = OptimConfig()
    sizes = ("an RL step samples --rl.prompts-per-step prompts x --rl.group-size completions, updates on them in "
             "--rl.minibatches optimizer steps per pass, --rl.micro-batch groups per forward")
    check(optim.batch_size == default.batch_size, "optim.batch_size", f"is not used by RL recipes: {sizes}",
          optim.batch_size)
    check(optim.grad_accum == default.grad_accum, "optim.grad_accum", f"is not used by RL recipes: {sizes}",
          optim.grad_accum)


def note_untrained_start(model_name: str, d: Dist) -> None:
    """One line when RL starts from a built-in random-init model (`tiny`...): its completions are noise, so a
    verifier's reward starts at 0 and, with nothing to compare, usually stays there; a smoke test, not a run that
    learns."""
    from posttrain.models.load import is_random_init

    if d.is_main and is_random_init(model_name):
        print(f"note: {model_name} is a random-init built-in model: its answers are noise, so the reward starts at "
              "0 and usually stays there (a smoke test); to learn, start from a trained policy (posttrain sft "
              "first, then --model.name runs/sft/final)", file=sys.stderr)


def check_world_size(rl: RLConfig, d: Dist) -> None:
    """A ConfigError unless each process can sample an equal share of every minibatch."""
    if d.enabled and rl.prompts_per_step % (rl.minibatches * d.world_size):
        raise ConfigError(f"rl.prompts_per_step={rl.prompts_per_step}: must be a multiple of rl.minibatches x the "
                          f"processes ({rl.minibatches} x {d.world_size}), so that each process samples an equal "
                          "share of every minibatch")


def check_run_start(cfg: Any, d: Dist, n_heldout: int) -> None:
    """The checks every online-RL run makes last, before it loads a model: the processes' shares of a step, a
    sharded run's held-out share, the sampler, the trackers, then the run directory (last: a run that exists is
    said after every mistake in the options); and the note on a random-init start."""
    check_world_size(cfg.rl, d)
    check_heldout(n_heldout, d, cfg.dist, "--data.eval-prompts")  # a prompt per sharded process
    check_sampler(cfg, d)
    check_trackers(cfg.run.trackers)
    check_run_dir(cfg.run, d.world_size)
    note_untrained_start(cfg.model.name, d)

# -- the run's start -------------------------------------------------------------------------------------------


def start_rl_run(cfg: Any, d: Dist, model: Any, steps_per_epoch: int, prompts: RunPrompts, label: str, spec: str
                 ) -> tuple[Run, Any, Any]:
    """The optimizer, the learning-rate schedule over every optimizer step of the run (rl.updates_per_batch x
    rl.minibatches per step) and the run (`training.loop.start_run`: its directory, or a resumed one's checkpoint),
    with the prompts' sources and the reward spec in its lineage; returns (run, optimizer, scheduler)."""
    optimizer = build_optimizer(model, cfg.optim)
    total_steps = cfg.optim.max_steps or max(1, int(cfg.optim.epochs * steps_per_epoch))
    scheduler = build_scheduler(optimizer, total_steps * cfg.rl.updates_per_batch * cfg.rl.minibatches, cfg.optim)
    data_lineage = [describe_source(s) for s in (cfg.data.train, prompts.eval_source) if s]
    run = start_run(cfg.run, cfg, d, model, optimizer, scheduler, total_steps, data_lineage, cfg.model.name, label,
                    reward=spec)
    return run, optimizer, scheduler
