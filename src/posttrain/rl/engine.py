"""The online-RL step that GRPO, RLOO and PPO share, as plain functions: a recipe calls them in order.

    sampled = sample_step(sampler, reward, prompts, order, step, cfg, d)  # this process's share of the step's
                                                            # prompts (step_share), G completions each with their
                                                            # log-probs (sample_groups), rewards (score_rollout)
    adv     = advantages(...)                               # the recipe's choice (rl/advantages.py)
    stats   = update(model, optimizer, ..., groups)         # μ passes over minibatches, clipped surrogate
    metrics = rollout_metrics(...) | stats                  # logged by training/loop.py's end_step

Exactness and resume: the prompts of step s are a pure function of (run.seed, s) (`PromptOrder`), and each
prompt's G samples come from random streams seeded by (run.seed, s, prompt index) (`step_seeds`; the sampler's
per-prompt seeds). So a step's rollout depends only on the weights and the step number: a checkpoint of the
weights, optimizer, scheduler and RNG states resumes a killed run exactly, with no sampler state to keep, and
under torchrun each process samples its share of the prompts and draws exactly what one process would.
The update's loss is normalised over the whole step (all micro-batches, all processes; training/loop.py's
`accumulate`), so 2 processes give the update of 1 with the same global batch.

What a run sets up before its first step (its options, reward spec, prompts, checks and the run's start) is
rl/setup.py's; the update's layout for the model is `update_layout`'s, here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from posttrain.config import SamplingParams
from posttrain.data.records import Prompt
from posttrain.errors import DataError
from posttrain.losses.policy import clipped_policy_loss, constant_normalizer_sum, sequence_mean_sum, token_sum
from posttrain.models.attention import pair_layout
from posttrain.rewards.score import Scores, explain_completions, score_completions
from posttrain.rl.batch import RolloutBatch, completion_logps, rollout_batch
from posttrain.rl.kl import kl_penalty
from posttrain.rl.mismatch import truncated_importance_weights
from posttrain.rl.setup import RLConfig, RunPrompts
from posttrain.sampling.sampler import Rollout, Sampler
from posttrain.sampling.vllm_sampler import VLLMSampler
from posttrain.training.distributed import Dist, all_reduce_max, all_reduce_sum, gather_to_main
from posttrain.training.loop import Run, accumulate, optimizer_step, skip_update

# -- the step's prompts ---------------------------------------------------------------------------------------


@dataclass
class PromptOrder:
    """Which prompts step s samples: each epoch a seeded shuffle of all prompts, cut into steps of `per_step`
    (a last partial step is dropped). A pure function of (seed, step): resuming needs no state."""

    n_prompts: int
    per_step: int
    seed: int

    def __post_init__(self) -> None:
        if self.per_step > self.n_prompts:
            raise DataError(f"rl.prompts_per_step={self.per_step} is more than the {self.n_prompts} training prompts; "
                            "lower it or give more prompts")

    @property
    def steps_per_epoch(self) -> int:
        return self.n_prompts // self.per_step

    def step(self, s: int) -> list[int]:
        """The global prompt indices of step s (0-based)."""
        epoch, i = divmod(s, self.steps_per_epoch)
        order = torch.randperm(self.n_prompts, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return order[i * self.per_step : (i + 1) * self.per_step].tolist()


def my_share(items: list, d: Dist) -> list:
    """This process's share of a step's items: every world_size-th, from its rank."""
    return items[d.rank :: d.world_size]


def step_share(step_prompts: list[int], rl: RLConfig, d: Dist) -> tuple[list[int], list[int]]:
    """This process's prompts of a step and their places in it: the places p with (p // rl.minibatches) %
    world_size == rank. Minibatch m holds the places p % rl.minibatches == m (`minibatch_of`), so each minibatch
    is spread evenly over the processes instead of falling to one of them."""
    positions = [p for p in range(len(step_prompts)) if (p // rl.minibatches) % d.world_size == d.rank]
    return [step_prompts[p] for p in positions], positions



def step_seeds(seed: int, step: int, prompt_indices: list[int]) -> list[int]:
    """One sampling seed per prompt of step `step`, from (run seed, step, the prompt's index) only."""
    return [((seed * 1_000_003 + step) * 1_000_003 + i) % 2**62 for i in prompt_indices]


def sample_groups(sampler: Sampler, ids: list[list[int]], indices: list[int], group_size: int,
                  params: SamplingParams, seeds: list[int]) -> Rollout:
    """`group_size` completions for each prompt `ids[i]`, i in `indices` (a group's completions adjacent)."""
    return sampler.sample([ids[i] for i in indices], group_size, params, seeds=seeds)


def score_rollout(reward: Any, prompts: list[Prompt], indices: list[int], rollout: Rollout) -> Scores:
    """Each completion's reward (and each part's, for a weighted sum) as an answer to its prompt."""
    records = [prompts[indices[g]] for g in rollout.group]
    return score_completions(reward, records, rollout.texts)


@dataclass
class StepSample:
    """This process's share of a step, sampled and scored (`sample_step`)."""

    rollout: Rollout
    scores: Scores
    positions: list[int]  # the places of its prompts in the step (`step_share`)
    seconds: float  # the sampling's wall time


def sample_step(sampler: Sampler, reward: Any, prompts: RunPrompts, order: PromptOrder, step: int, cfg: Any,
                d: Dist) -> StepSample:
    """Step `step`'s prompts (`order`), this process's share of them sampled rl.group_size times each from the
    step's seeds and scored by `reward`. A vLLM engine sleeps after sampling (with --vllm.sleep-mode its GPU memory
    is the update's until the weights come back)."""
    mine, positions = step_share(order.step(step), cfg.rl, d)
    t0 = time.perf_counter()
    rollout = sample_groups(sampler, prompts.train_ids, mine, cfg.rl.group_size, cfg.sampling,
                            step_seeds(cfg.run.seed, step, mine))
    seconds = time.perf_counter() - t0
    if isinstance(sampler, VLLMSampler):
        sampler.sleep()
    return StepSample(rollout, score_rollout(reward, prompts.train, mine, rollout), positions, seconds)


def global_moments(values: torch.Tensor, d: Dist) -> tuple[int, float, float]:
    """(count, mean, unbiased variance) of `values` over every process's values; mean 0 with no values, variance 0
    with fewer than 2. Every process must call it (a collective), with or without values of its own."""
    n, total, squares = all_reduce_sum(torch.stack([torch.tensor(float(len(values)), dtype=torch.float64),
                                                    values.double().sum(), (values.double() ** 2).sum()]), d).tolist()
    mean = total / n if n else 0.0
    variance = max(squares - total * total / n, 0.0) / (n - 1) if n >= 2 else 0.0
    return int(n), mean, variance


def global_std(values: torch.Tensor, d: Dist) -> float:
    """Unbiased std of `values` over every process's values (the batch std of GRPO's scale="batch")."""
    return math.sqrt(global_moments(values, d)[2])


# -- the update -----------------------------------------------------------------------------------------------


@dataclass
class Groups:
    """This process's sampled groups of one step, in the layout the update reads."""

    prompt_ids: list[list[int]]  # (groups,) the prompt of each group
    completions: list[list[list[int]]]  # [group][k] token ids
    old_logps: list[list[torch.Tensor]]  # [group][k] one value per token
    advantages: list[list[float]]  # [group][k]
    indices: list[list[int]]  # [group][k]: the completion's index in the rollout
    global_position: list[int]  # (groups,) the group's place in the step's global prompt list

    def select(self, keep: list[int]) -> "Groups":
        return Groups(*([field[g] for g in keep] for field in (self.prompt_ids, self.completions, self.old_logps,
                                                                 self.advantages, self.indices, self.global_position)))

    def __len__(self) -> int:
        return len(self.prompt_ids)


def make_groups(rollout: Rollout, advantages: torch.Tensor, group_size: int, positions: list[int]) -> Groups:
    """The rollout's groups (G adjacent completions each) with their advantages (N,)."""
    n_groups = len(rollout) // group_size
    span = [list(range(g * group_size, (g + 1) * group_size)) for g in range(n_groups)]
    return Groups(
        prompt_ids=[rollout.prompt_ids[s[0]] for s in span],
        completions=[[rollout.completion_ids[i] for i in s] for s in span],
        old_logps=[[rollout.logps[i] for i in s] for s in span],
        advantages=[[float(advantages[i]) for i in s] for s in span],
        indices=span, global_position=positions,
    )


@dataclass(frozen=True)
class Layout:
    """How groups go through the policy in the update (`models.attention.pair_layout` decides it per model)."""

    share_prompt: bool
    mask_dtype: torch.dtype
    trim_logits: bool
    pad_id: int
    device: torch.device
    last_layer: bool = False  # the last decoder layer at the scored positions only (models/last_layer.py)


def update_layout(model: torch.nn.Module, tokenizer: Any, share_prompt: bool, device: torch.device,
                  last_layer: bool = True) -> Layout:
    """The fastest layout `model` takes exactly (`models.attention.pair_layout`: one row per group with a block
    mask, the LM head from the last prompt token on, the last decoder layer at the scored positions only), padded
    with the tokenizer's pad token (its end token when it has none). `last_layer=False`: not the last of these,
    when another model in the update cannot take it (PPO's value model)."""
    pairs = pair_layout(model, share_prompt)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Layout(pairs.share_prompt, pairs.mask_dtype, pairs.trim_logits, pad_id, device,
                  pairs.last_layer and last_layer)


def micro_batches(groups: Groups, rl: RLConfig, layout: Layout, aggregation_units: Callable[[RolloutBatch], int]
                  ) -> list[RolloutBatch]:
    """This process's groups in micro-batches of `rl.micro_batch` groups, sorted by length so each micro-batch
    pads little; an empty list gets one empty micro-batch (no token counts), so every process takes part in
    DDP's gradient all-reduce."""
    order = sorted(range(len(groups)), key=lambda g: (sum(len(c) for c in groups.completions[g]), g))
    chunks = [order[i : i + rl.micro_batch] for i in range(0, len(order), rl.micro_batch)]
    out = []
    for chunk in chunks:
        part = groups.select(chunk)
        b = rollout_batch(part.prompt_ids, part.completions, part.old_logps, part.advantages, part.indices,
                          layout.pad_id, layout.device, layout.share_prompt, layout.mask_dtype, layout.trim_logits,
                          layout.last_layer)
        b.count = aggregation_units(b)
        out.append(b)
    if not out:  # nothing to learn from here: a stand-in whose loss is 0, with a gradient of zeros
        out.append(stand_in(layout))
    return out


def stand_in(layout: Layout) -> RolloutBatch:
    """A one-token micro-batch of no completion (mask all False, count 0, completion index -1): its loss is 0 and
    its gradient zeros, but it takes part in every collective of a forward and backward."""
    b = rollout_batch([[layout.pad_id]], [[[layout.pad_id]]], [[torch.zeros(1)]], [[0.0]], [[-1]],
                      layout.pad_id, layout.device, False, layout.mask_dtype, False)
    b.mask.zero_()
    b.count = 0
    return b


def in_step(batches: list[RolloutBatch], layout: Layout, d: Dist | None) -> list[RolloutBatch]:
    """`batches` and as many stand-ins after them as make every process's list as long: the processes of a
    sharded (FSDP2) model must run the same number of forwards and backwards (models/sharding.py), and packing
    gives each process the micro-batches its own completions fill."""
    if d is None or not d.enabled:
        return batches
    most = int(all_reduce_max(len(batches), d))
    return batches + [stand_in(layout) for _ in range(most - len(batches))]


def aggregation(rl: RLConfig, max_new_tokens: int) -> tuple[Callable, Callable[[RolloutBatch], int]]:
    """(the loss aggregation of losses/policy.py, the units a micro-batch adds to the step's normaliser)."""
    if rl.loss_aggregation == "token":
        return token_sum, lambda b: b.tokens
    if rl.loss_aggregation == "sequence":
        return sequence_mean_sum, lambda b: b.mask.shape[0]
    return (lambda per_token, mask: constant_normalizer_sum(per_token, mask, max_new_tokens)), lambda b: b.mask.shape[0]


def policy_loss(rl: RLConfig, aggregate: Callable, model: torch.nn.Module, batch: RolloutBatch,
                logps_and_entropy: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate (+ β·KL) of one micro-batch, summed as the aggregation says, and metric sums
    (token sums, divided by the step's tokens afterwards; see `update`). `logps_and_entropy`: the micro-batch's
    log-probs and entropy, (C, L) each, when the caller's forward gave them (PPO's shared value head); unset, the
    forward is made here."""
    if logps_and_entropy is None:
        logps_and_entropy = completion_logps(model, batch, with_entropy=True)
    logps, entropy = logps_and_entropy  # (C, L), (C, L)
    per_token, clipped = clipped_policy_loss(logps, batch.old_logps, batch.advantages, batch.mask, rl.eps_low,
                                             rl.eps_high)  # (C, L) each
    mask = batch.mask
    sums = {"tokens": float(mask.sum()), "clip_tokens": float(clipped.sum()),
            "entropy_sum": float((entropy * mask).sum()),
            "ratio_sum": float((torch.exp(logps - batch.old_logps).detach() * mask).sum()),
            # k2 = ½ (log ρ)², the approximate KL to the old policy that PPO's early stop reads
            "approx_kl_sum": float(torch.where(mask, 0.5 * (logps.detach() - batch.old_logps) ** 2, 0.0).sum())}
    if batch.sampler_logps is not None:  # vLLM sampled: weigh the surrogate (not the KL term) by TIS, as TRL does
        weights, tis_sums = truncated_importance_weights(batch.old_logps, batch.sampler_logps, mask, rl.tis_cap)
        per_token = per_token * weights  # (C, L)
        sums |= tis_sums
    if rl.kl_beta > 0:
        kl = kl_penalty(logps, batch.ref_logps, rl.kl_estimator)  # (C, L)
        per_token = per_token + rl.kl_beta * kl
        sums["kl_sum"] = float((kl.detach() * mask).sum())
    loss, _ = aggregate(per_token, mask)
    return loss, sums


@torch.no_grad()
def fill_logps(policy: Callable[[Callable], torch.Tensor] | torch.nn.Module, batches: list[RolloutBatch],
               field: str) -> None:
    """Set `batch.<field>` (old_logps or ref_logps) to a no-grad forward's log-probs, (C, L), for each batch.
    `policy`: a module, or a `models.reference.Reference` (called with a function of the module)."""
    for b in batches:
        if isinstance(policy, torch.nn.Module):
            was = policy.training
            policy.eval()
            logps = completion_logps(policy, b)[0]
            policy.train(was)
        else:
            logps = policy(lambda m, b=b: completion_logps(m, b)[0])
        setattr(b, field, torch.where(b.mask, logps, 0.0))


def minibatch_of(groups: Groups, rl: RLConfig, m: int) -> Groups:
    """Minibatch m: the groups whose global place in the step is m modulo rl.minibatches (the same split however
    the groups are spread over processes)."""
    return groups.select([g for g in range(len(groups)) if groups.global_position[g] % rl.minibatches == m])


def prepare_update(groups: Groups, rl: RLConfig, layout: Layout, max_new_tokens: int, reference: Any = None,
                   old_policy: torch.nn.Module | None = None, d: Dist | None = None
                   ) -> tuple[list[list[RolloutBatch]], Callable]:
    """The step's groups as rl.minibatches lists of micro-batches (with `d`, as many on every process: `in_step`),
    and the loss aggregation. With `reference` (a `models.reference.Reference`), each batch gets its ref_logps;
    when rl.recomputes_old_logps, its old_logps from a no-grad forward of `old_policy` (the unwrapped policy,
    before any update of the step), else they stay the sampler's."""
    aggregate, units = aggregation(rl, max_new_tokens)
    parts = [in_step(micro_batches(minibatch_of(groups, rl, m), rl, layout, units), layout, d)
             for m in range(rl.minibatches)]
    for batches in parts:
        if reference is not None:
            fill_logps(reference, batches, "ref_logps")
        if rl.corrects_mismatch:  # keep the engine's log-probs for the TIS weights; the forward's become the old
            for b in batches:
                b.sampler_logps = b.old_logps
        if old_policy is not None and rl.recomputes_old_logps(old_policy):  # the old policy is this one
            fill_logps(old_policy, batches, "old_logps")
    return parts, aggregate


@dataclass
class Passes:
    """What `run_updates` did: metric sums over every process's tokens, each optimizer step's loss and grad norm,
    the passes made (fewer than rl.updates_per_batch when the KL bound stopped them) and tokens trained."""

    totals: dict[str, float]
    losses: list[float]
    norms: list[float]
    passes: int
    trained_tokens: float


def run_updates(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                parts: list[list[RolloutBatch]], rl: RLConfig, loss_fn: Callable, max_grad_norm: float, run: Run,
                step: int, d: Dist, max_approx_kl: float = 0.0) -> Passes:
    """μ = rl.updates_per_batch passes over `parts`, one optimizer step per minibatch, `loss_fn(model, batch) ->
    (loss, metric sums)`. `max_approx_kl` > 0: after a minibatch whose mean approximate KL to the old policy
    (the sums' approx_kl_sum / tokens) is above it, the rest of this step's updates are skipped (PPO's early stop,
    as in OpenAI's Spinning Up)."""
    totals: dict[str, float] = {}
    losses, norms, passes = [], [], 0
    for _ in range(rl.updates_per_batch):
        passes += 1
        stop = False
        for batches in parts:
            count = all_reduce_sum(sum(b.count for b in batches), d).item()
            if count == 0:  # every group of the minibatch left out (--rl.drop-zero-variance), on every process
                skip_update(optimizer, scheduler, run, step)
                losses.append(0.0)
                norms.append(0.0)
                continue
            loss, sums = accumulate(model, batches, loss_fn, d)
            norms.append(optimizer_step(model, optimizer, scheduler, max_grad_norm, loss, run, step))
            losses.append(loss)
            for k, v in sums.items():  # accumulate gave sums / count; back to sums
                totals[k] = totals.get(k, 0.0) + v * count
            if max_approx_kl > 0 and sums.get("approx_kl_sum", 0.0) / max(sums.get("tokens", 0.0), 1e-12) > max_approx_kl:
                stop = True
                break
        if stop:
            break
    # tokens through the policy with gradient (every pass), over all processes
    trained = all_reduce_sum(passes * sum(b.n_input for batches in parts for b in batches), d).item()
    return Passes(totals, losses, norms, passes, trained)


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, groups: Groups, rl: RLConfig,
           layout: Layout, max_new_tokens: int, max_grad_norm: float, run: Run, step: int, d: Dist,
           reference: Any = None, base_model: torch.nn.Module | None = None) -> dict[str, float]:
    """μ = rl.updates_per_batch passes over the step's groups, each in rl.minibatches optimizer steps; returns
    the step's loss, grad norm, clip fraction, mean ratio, entropy and (with β > 0) KL, over its tokens.
    `reference`: a `models.reference.Reference` when rl.kl_beta > 0. `base_model`: the unwrapped policy, for the
    no-grad forwards (the old policy's log-probs when samples are reused)."""
    t0 = time.perf_counter()
    parts, aggregate = prepare_update(groups, rl, layout, max_new_tokens, reference if rl.kl_beta > 0 else None,
                                      base_model if base_model is not None else model, d)
    done = run_updates(model, optimizer, scheduler, parts, rl, lambda m, b: policy_loss(rl, aggregate, m, b),
                       max_grad_norm, run, step, d)
    out = {"perf/trainer_tokens_per_second": done.trained_tokens / max(time.perf_counter() - t0, 1e-9),
           **policy_metrics(done)}
    if rl.kl_beta > 0:
        out["train/kl"] = done.totals.get("kl_sum", 0.0) / max(done.totals.get("tokens", 0.0), 1.0)
    return out


def policy_metrics(done: Passes) -> dict[str, float]:
    """The policy side of a step's updates: mean loss and grad norm over its optimizer steps; clip fraction, mean
    ratio, approximate KL to the old policy and entropy over its tokens."""
    t = done.totals
    out = {"train/loss": sum(done.losses) / len(done.losses), "train/grad_norm": sum(done.norms) / len(done.norms)}
    if not t.get("tokens"):  # no token trained (--rl.drop-zero-variance left out every group): no ratio to report,
        return out           # where 0s would read as a collapsed policy on the curves
    tokens = t["tokens"]
    out |= {"train/clip_ratio": t.get("clip_tokens", 0.0) / tokens, "train/ratio_mean": t.get("ratio_sum", 0.0) / tokens,
            "train/approx_kl": t.get("approx_kl_sum", 0.0) / tokens, "train/entropy": t.get("entropy_sum", 0.0) / tokens}
    if "tis_weight_sum" in t:  # truncated importance sampling of an engine's samples (rl/mismatch.py)
        out |= {"train/tis_weight_mean": t["tis_weight_sum"] / tokens,
                "train/tis_clip_ratio": t["tis_clipped_tokens"] / tokens,
                "train/tis_abs_logp_diff": t["tis_abs_logp_diff_sum"] / tokens}
    return out


# -- metrics and evaluation -----------------------------------------------------------------------------------


def rollout_metrics(rollout: Rollout, scores: Scores, rewards: torch.Tensor, group_size: int, zero_std: torch.Tensor,
                    seconds: float, d: Dist) -> dict[str, float]:
    """Over every process's completions of the step: reward mean/std (and each part's), the fraction of groups
    whose rewards are all equal, completion lengths, finish reasons, and the sampler's speed."""
    lengths = torch.tensor([float(len(c)) for c in rollout.completion_ids], dtype=torch.float64)
    reasons = [sum(r == k for r in rollout.finish_reasons) for k in ("eos", "stop", "length")]
    values = {"reward": rewards.double()} | {f"rewards/{name}": torch.tensor(v, dtype=torch.float64)
                                             for name, v in scores.parts.items()}
    local = [float(len(rollout)), float(len(zero_std)), float(zero_std.sum()), float(lengths.sum()), *map(float, reasons)]
    for v in values.values():
        local += [float(v.sum()), float((v ** 2).sum())]
    g = all_reduce_sum(torch.tensor(local, dtype=torch.float64), d).tolist()
    longest = torch.tensor(float(lengths.max()) if len(lengths) else 0.0)
    if d.enabled:
        torch.distributed.all_reduce(longest, op=torch.distributed.ReduceOp.MAX)
    n, n_groups = max(g[0], 1.0), max(g[1], 1.0)
    seconds_all = all_reduce_sum(seconds, d).item() / d.world_size
    out = {"train/frac_reward_zero_std": g[2] / n_groups, "completions/mean_length": g[3] / n,
           "completions/max_length": float(longest), "completions/eos_ratio": g[4] / n,
           "completions/stop_ratio": g[5] / n, "completions/clipped_ratio": g[6] / n,
           "perf/sample_seconds": seconds_all, "perf/sampler_tokens_per_second": g[3] / max(seconds_all, 1e-9)}
    for j, name in enumerate(values):
        total, squares = g[7 + 2 * j], g[8 + 2 * j]
        mean = total / n
        out[f"{name}/mean" if name != "reward" else "train/reward"] = mean
        std = math.sqrt(max(squares - n * mean * mean, 0.0) / max(n - 1, 1))
        out[f"{name}/std" if name != "reward" else "train/reward_std"] = std
    return out


class FlatStart:
    """Says once when every group of each of a run's first `after` steps got G equal rewards
    (train/frac_reward_zero_std = 1): every advantage was 0, so those steps learned nothing from the reward, and
    a run that goes on like this ends as it started without an error anywhere. Usually the reward does not fit
    the task's answers (or reads a field the prompts lack), or the policy cannot yet produce any answer it
    rewards, or already gets every one right."""

    def __init__(self, total_steps: int, group_size: int, after: int = 3):
        self.after, self.group_size = max(1, min(after, total_steps)), group_size
        self.rewards: list[float] = []
        self.done = False

    def see(self, metrics: dict[str, float], no_advantage: bool = True) -> str | None:
        """The note after the `after`-th step in a row with only flat groups, else None (and None ever after
        a step with a group whose rewards differ). `no_advantage`: whether every advantage of this process's
        step was 0 (False for a baseline over the batch, whose groups of equal rewards still learn)."""
        if self.done:
            return None
        if metrics["train/frac_reward_zero_std"] < 1.0 or not no_advantage:
            self.done = True
            return None
        self.rewards.append(metrics["train/reward"])
        if len(self.rewards) < self.after:
            return None
        self.done = True
        low, high = min(self.rewards), max(self.rewards)
        value = f"{low:.3g}" if low == high else f"{low:.3g} to {high:.3g}"
        n = len(self.rewards)
        steps = "the first step" if n == 1 else f"each of the first {n} steps"
        return (f"note: in {steps}, every prompt's {self.group_size} completions got equal rewards (mean reward "
                f"{value}), so every advantage was 0 and nothing was learned from the reward. Look at what the "
                "policy writes and how the reward scores it (posttrain generate, then posttrain score --reward "
                "with this run's spec): the reward may not fit the task's answers, the policy may produce no "
                "answer it rewards yet (start from an SFT model), or it may get every one right already (a harder "
                "task); more varied samples help too (--sampling.temperature, --rl.group-size)")


def sample_reference(prompt: Prompt, taken: tuple[str, ...]) -> dict[str, Any]:
    """A held-out sample row's copy of the prompt's plain reference fields (`answer`, ...), leaving out the
    names the row's own fields `taken` use."""
    return {k: v for k, v in prompt.reference.items() if isinstance(v, (str, int, float)) and k not in taken}


def evaluate_policy(model: torch.nn.Module, sampler: Sampler, prompts: list[Prompt], ids: list[list[int]],
                    reward: Any, params: SamplingParams, d: Dist) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy completions of this process's share of the held-out prompts, scored by `reward`: the mean score
    over all processes (eval/accuracy for a 0/1 verifier), mean length, and the samples (every process's, on the
    main process)."""
    indices = my_share(list(range(len(prompts))), d)
    greedy = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=0.0, stop=params.stop)
    t0 = time.perf_counter()
    rollout = sampler.sample([ids[i] for i in indices], 1, greedy) if indices else None
    texts = rollout.texts if rollout else []
    scored, reasons = explain_completions(reward, [prompts[i] for i in indices], texts) if indices else (None, [])
    scores = scored.total if indices else []
    lengths = [len(c) for c in rollout.completion_ids] if rollout else []
    n, total, length = all_reduce_sum(torch.tensor([len(scores), sum(scores), sum(lengths)], dtype=torch.float64),
                                      d).tolist()
    samples = [{"prompt": prompts[i].text, "completion": t, "reward": s, "reason": why,
                **sample_reference(prompts[i], ("reward", "reason"))}
               for i, t, s, why in zip(indices, texts, scores, reasons)]
    metrics = {"eval/accuracy": total / max(n, 1), "eval/mean_length": length / max(n, 1),
               "perf/eval_seconds": time.perf_counter() - t0}
    return metrics, gather_to_main(samples, d)
