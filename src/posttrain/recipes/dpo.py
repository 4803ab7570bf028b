"""Direct preference optimization on (prompt, chosen, rejected) pairs: DPO, conservative DPO, IPO,
SimPO, each optionally with RPO's NLL term on the chosen responses.

Per pair the policy's log-probs of both responses come from ONE forward pass, summed over response
tokens for DPO and averaged per token for IPO and SimPO, as TRL does. By default each prompt is
encoded once, in one row [prompt, chosen, rejected] with a block attention mask (prefix sharing,
arXiv:2410.20305); otherwise 2B right-padded rows (chosen first, then rejected). Logits are computed
only from the last prompt token on (transformers' logits_to_keep), where the model supports it.
The reference log-probs (DPO, IPO) are those of the starting model: by default computed once
before training and cached in the run directory (see PreferenceConfig.reference).
The loss is averaged over every pair of the optimizer step, across micro-batches and processes.
Reads top to bottom: config -> check inputs -> set up -> reference -> loop -> save.

    posttrain dpo --data.train pairs.jsonl --model.name smollm2 --model.lora-r 8
    posttrain dpo --data.train pairs.jsonl --dpo.loss simpo --dpo.beta 2.0

Departures: IPO on length-averaged log-probs, as TRL (the paper sums them). Differences from TRL:
RPO's NLL term is normalised per pair by the chosen length, as in the paper (TRL takes a token mean
over the micro-batch, which changes with how a step is split); the reference is precomputed by default.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Literal

import torch

from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig, _check
from posttrain.data.load import describe_source, load_records
from posttrain.data.preference import (
    CHOSEN,
    PREFERENCE_KINDS,
    REFERENCE_CACHE,
    REJECTED,
    PreferenceExample,
    collate_pairs,
    collate_shared_prompt,
    fingerprint,
    load_reference_logps,
    save_reference_logps,
    split_heldout,
    tokenize_preferences,
)
from posttrain.errors import ConfigError
from posttrain.losses.preference import dpo_loss, ipo_loss, simpo_loss
from posttrain.models.load import load_model, load_tokenizer, reference_context
from posttrain.models.logprobs import (
    accepts_logits_to_keep,
    average_sequence_logps,
    gathered_token_logps,
    sequence_logps,
)
from posttrain.models.logprobs import token_logps as token_logps_of
from posttrain.models.lora import is_lora, transformers_model
from posttrain.training.checkpoint import seed_everything, unwrap
from posttrain.training.distributed import Dist, all_reduce_sum, setup_distributed, teardown
from posttrain.training.loop import Schedule, accumulate, end_step, finish_run, optimizer_step, start_run
from posttrain.training.optim import build_optimizer, build_scheduler
from posttrain.training.rundir import check_run_dir, run_path

log = logging.getLogger(__name__)

# Logged per step as is, and at evaluation as eval/NAME (TRL's names, so logs compare side by side).
REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                  "logps/chosen", "logps/rejected")


@dataclass
class PreferenceConfig:
    """The preference objective and where its reference log-probs come from."""

    loss: Literal["dpo", "ipo", "simpo"] = "dpo"
    """`dpo`: -log σ(beta·h) on summed log-probs, h = how much more the policy prefers chosen over rejected
    than the reference does (arXiv:2305.18290). `ipo`: (h - 1/(2·beta))² on length-averaged log-probs
    (arXiv:2310.12036). `simpo`: reference-free, -log σ(beta·(avg_c - avg_r) - γ) on length-averaged
    log-probs (arXiv:2405.14734)."""
    beta: float = 0.1
    """Its meaning depends on the loss. dpo: scale of the implicit reward beta·(log π - log π_ref); usual
    0.01-0.5. ipo: the regularisation τ; the log-ratio margin is pulled to 1/(2·beta); usual 0.1-1.
    simpo: scale of the average log-likelihood; usual 2.0-2.5, and at least 1 is required."""
    label_smoothing: float = 0.0
    """Conservative DPO (cDPO): the assumed probability that a preference label is flipped, in [0, 0.5).
    The loss then stops pushing once σ(beta·h) = 1 - label_smoothing. Only with loss=dpo."""
    simpo_gamma_beta_ratio: float = 0.5
    """SimPO's target reward margin γ as a fraction of beta (γ = ratio·beta). Only with loss=simpo."""
    nll_coef: float = 0.0
    """Weight of an NLL term on the chosen responses, per pair and per chosen token (RPO,
    arXiv:2404.19733, which uses 1.0): keeps the chosen responses' likelihood from falling. 0 disables."""
    reference: Literal["precompute", "online"] = "precompute"
    """Where the reference log-probs (dpo, ipo) come from. `precompute`: one no-grad pass before training
    over train and eval pairs, cached in the run directory as reference_logps.safetensors and reused on
    resume; no extra memory (the starting weights are the reference; with LoRA, the base model with the
    adapters off). `online`: a no-grad forward per batch; with LoRA the adapters are switched off, without
    LoRA a frozen copy of the model is kept (one more copy of the weights in memory for the whole run).
    SimPO uses no reference."""

    def __post_init__(self) -> None:
        _check(self.beta > 0, "dpo.beta", "must be > 0", self.beta)
        _check(self.loss != "simpo" or self.beta >= 1, "dpo.beta", "SimPO's beta scales average log-probs; "
               "use >= 1 (the authors use 2.0-2.5): pass --dpo.beta 2.0", self.beta)
        _check(0 <= self.label_smoothing < 0.5, "dpo.label_smoothing",
               "must be in [0, 0.5) (0.5 means labels are coin flips)", self.label_smoothing)
        _check(self.label_smoothing == 0 or self.loss == "dpo", "dpo.label_smoothing",
               f"is conservative DPO and only applies with --dpo.loss dpo (not {self.loss})", self.label_smoothing)
        _check(self.simpo_gamma_beta_ratio >= 0, "dpo.simpo_gamma_beta_ratio", "must be >= 0",
               self.simpo_gamma_beta_ratio)
        _check(self.simpo_gamma_beta_ratio == 0.5 or self.loss == "simpo", "dpo.simpo_gamma_beta_ratio",
               f"only applies with --dpo.loss simpo (not {self.loss})", self.simpo_gamma_beta_ratio)
        _check(self.nll_coef >= 0, "dpo.nll_coef", "must be >= 0 (0 disables the NLL term)", self.nll_coef)
        _check(self.reference == "precompute" or self.loss != "simpo", "dpo.reference",
               "SimPO uses no reference model; drop --dpo.reference", self.reference)

    @property
    def length_normalized(self) -> bool:
        """IPO and SimPO compare per-token average log-probs; DPO compares sums."""
        return self.loss in ("ipo", "simpo")

    @property
    def needs_reference(self) -> bool:
        return self.loss != "simpo"


@dataclass
class PreferenceDataConfig(DataConfig):
    """Preference pairs (or rankings) and how they are cut into batches."""

    train: str = ""
    """Preference data (required): JSONL/JSON/CSV/Parquet or a datasets folder with prompt, chosen, rejected
    (TRL's preference format), or ranking rows (prompt, responses, order), each used as its C(K,2) pairs.
    `posttrain data pairs` makes such a file from a model's samples."""
    eval: str | None = None
    """Held-out preference data, same forms as `train`. When unset, eval_fraction of the train rows are held out."""
    eval_fraction: float = 0.1
    """Fraction of train rows held out for evaluation when `eval` is unset (seeded by run.seed); 0 disables."""
    share_prompt: bool = True
    """Encode each prompt once for both of its responses: one row [prompt, chosen, rejected] with a block
    attention mask (prefix sharing, arXiv:2410.20305) instead of two rows that both hold the prompt. The
    log-probs are the same; fewer tokens go through the model (the prompt's share of each pair). Applies when
    the model's attention takes a 4D mask (sdpa, eager; not flash-attention), else two rows are used."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.eval_fraction < 1, "data.eval_fraction", "must be in [0, 1)", self.eval_fraction)
        _check(not self.packing, "data.packing", "is not supported for preference pairs (each pair is two "
               "padded sequences); drop --data.packing", self.packing)


@dataclass
class DPOConfig:
    """Direct preference optimization (DPO, IPO, SimPO) on preference pairs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=10, batch_size=16))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="dpo"))
    dpo: PreferenceConfig = field(default_factory=PreferenceConfig)


def prepare_data(cfg: DPOConfig, tokenizer) -> tuple[list[PreferenceExample], list[PreferenceExample], list[dict]]:
    """Load, validate and tokenize train and held-out pairs. Returns train, eval, lineage entries."""
    if not cfg.data.train:
        raise ConfigError("data.train is required: a file of preference pairs (prompt, chosen, rejected), "
                          "e.g. --data.train pairs.jsonl; `posttrain data pairs` makes one from a model's samples")
    records = load_records(cfg.data.train, accept=PREFERENCE_KINDS, limit=cfg.data.limit)
    train = tokenize_preferences(records, tokenizer, cfg.data, source=cfg.data.train)
    lineage = [describe_source(cfg.data.train)]
    if not cfg.data.eval:
        return (*split_heldout(train, cfg.data.eval_fraction, cfg.run.seed), lineage)
    evals = tokenize_preferences(load_records(cfg.data.eval, accept=PREFERENCE_KINDS), tokenizer, cfg.data,
                                 source=cfg.data.eval)
    return train, evals, lineage + [describe_source(cfg.data.eval)]


@dataclass(frozen=True)
class PairLayout:
    """How pairs go through a given model: see `pair_layout`."""

    share_prompt: bool = False
    """One row [prompt, chosen, rejected] per pair (else two rows)."""
    mask_dtype: torch.dtype = torch.bool
    """The 4D mask's form: bool for sdpa, an additive float mask for eager attention."""
    trim_logits: bool = False
    """Pass `logits_to_keep` so the LM head runs only from the last prompt token on."""


def pair_layout(model: torch.nn.Module, share_prompt: bool) -> PairLayout:
    """The fastest layout `model` supports exactly; `share_prompt=False` forces two rows."""
    base = transformers_model(model)
    attention = getattr(base.config, "_attn_implementation", None)
    share = share_prompt and attention in ("sdpa", "eager")
    if share_prompt and not share:
        log.info("data.share_prompt: %s attention takes no 4D mask; each pair is two rows", attention)
    return PairLayout(share, torch.bool if attention == "sdpa" else base.dtype, accepts_logits_to_keep(model))


def make_pair_batch(examples: list[PreferenceExample], indices: list[int], pad_id: int, device: torch.device,
                    layout: PairLayout = PairLayout()) -> dict:
    """Model inputs for the pairs of `indices` in `layout`, what `response_logps` needs to score them, and counts."""
    if not indices:
        raise ValueError("a micro-batch needs at least one pair (batch size x processes > dataset?)")
    pairs = [examples[i] for i in indices]
    n_input = sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in pairs)
    shortest_prompt = min(len(e.prompt_ids) for e in pairs)
    # logits are needed from the shortest prompt's last token on; earlier ones only when the model cannot skip them
    first = max(shortest_prompt - 1, 0) if layout.trim_logits else 0
    if layout.share_prompt and shortest_prompt > 0:
        b = collate_shared_prompt(pairs, pad_id)
        mask = b["attention"]  # (B, 1, T, T)
        if layout.mask_dtype != torch.bool:  # eager attention adds the mask to its scores
            lowest = torch.finfo(layout.mask_dtype).min
            mask = torch.zeros(mask.shape, dtype=layout.mask_dtype).masked_fill_(~mask, lowest)
        inputs = {"input_ids": b["input_ids"], "position_ids": b["position_ids"], "attention_mask": mask}
        score = {"predictors": (b["predictors"] - first).clamp(min=0),  # padding targets read position 0
                 "targets": b["targets"], "target_segment": b["target_segment"]}
    else:
        b = collate_pairs(pairs, pad_id)
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        score = {"completion_mask": b["completion_mask"][:, first:], "targets": b["input_ids"][:, first + 1 :]}
    width = inputs["input_ids"].shape[1]
    inputs = {k: v.to(device) for k, v in inputs.items()} | {"use_cache": False}
    if layout.trim_logits:
        inputs["logits_to_keep"] = width - first  # logits for positions first .. T-1 only
    return {"inputs": inputs, **{k: v.to(device) for k, v in score.items()}, "count": len(indices),
            "n_input": n_input}


def response_logps(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token log-probs of the batch's responses and where they are: (B, N) log-probs, chosen mask, rejected mask."""
    logits = model(**batch["inputs"]).logits  # (rows, T - first, V)
    if "predictors" in batch:  # shared prompt: one row per pair
        token_logps = gathered_token_logps(logits, batch["predictors"], batch["targets"])  # (B, N)
        return token_logps, batch["target_segment"] == CHOSEN, batch["target_segment"] == REJECTED
    token_logps = token_logps_of(logits[:, :-1], batch["targets"])  # (2B, T - first - 1)
    mask = batch["completion_mask"]  # (2B, T - first - 1)
    chosen, rejected = token_logps.chunk(2)  # (B, T - first - 1) each
    none = torch.zeros_like(mask[: len(chosen)])
    return (torch.cat([chosen, rejected], 1), torch.cat([mask[: len(chosen)], none], 1),
            torch.cat([none, mask[len(chosen) :]], 1))  # (B, 2(T - first - 1)) each


def pair_logps(model: torch.nn.Module, batch: dict, average: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen, rejected, chosen per-token mean), each (B,), from one forward over the batch's pairs.
    `average`: chosen and rejected are per-token means (IPO, SimPO), else sums (DPO)."""
    token_logps, chosen_mask, rejected_mask = response_logps(model, batch)  # (B, N) each
    reduce = average_sequence_logps if average else sequence_logps
    chosen_mean = average_sequence_logps(token_logps, chosen_mask)
    return reduce(token_logps, chosen_mask), reduce(token_logps, rejected_mask), chosen_mean


def preference_loss(pref: PreferenceConfig, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor | None, ref_rejected_logps: torch.Tensor | None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The configured objective: (mean loss over the B pairs, metric means)."""
    if pref.loss == "dpo":
        return dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, pref.beta,
                        pref.label_smoothing)
    if pref.loss == "ipo":
        return ipo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, pref.beta)
    return simpo_loss(chosen_logps, rejected_logps, pref.beta, pref.simpo_gamma_beta_ratio)


def preference_step_loss(pref: PreferenceConfig, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    """Loss SUMMED over the batch's pairs and metric sums, as the training engine wants."""
    chosen, rejected, chosen_mean = pair_logps(model, batch, pref.length_normalized)
    loss, metrics = preference_loss(pref, chosen, rejected, batch.get("ref_chosen_logps"),
                                    batch.get("ref_rejected_logps"))
    n = batch["count"]
    loss_sum = loss * n  # the losses return means over the batch; sums make accumulation exact
    sums = {k: float(v) * n for k, v in metrics.items()}
    if pref.nll_coef > 0:
        # RPO's NLL is per pair, over the chosen tokens (arXiv:2404.19733 eq. 3): nll_loss taken one row at a
        # time. A token mean over the micro-batch would change with how a step is split into micro-batches.
        nll = -chosen_mean  # (B,)
        loss_sum = loss_sum + pref.nll_coef * nll.sum()
        sums["nll_loss"] = float(nll.detach().sum())
    return loss_sum, sums


ReferenceFn = Callable[[dict], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def _frozen_pair_logps(model: torch.nn.Module, batch: dict, average: bool) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    chosen, rejected, _ = pair_logps(model, batch, average)
    model.train(was_training)
    return chosen, rejected


def reference_fn(pref: PreferenceConfig, model: torch.nn.Module) -> ReferenceFn | None:
    """batch -> the reference's (chosen, rejected) log-probs. Call it BEFORE the first update (and before a
    checkpoint is loaded): without LoRA it reads the weights as they are now. None for SimPO."""
    if not pref.needs_reference:
        return None
    base = unwrap(model)
    if is_lora(base):
        def adapters_off(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
            with reference_context(base):
                return _frozen_pair_logps(base, batch, pref.length_normalized)

        return adapters_off
    # precompute runs now, on the starting weights; online needs them for the whole run, hence the copy
    reference = base if pref.reference == "precompute" else copy.deepcopy(base).requires_grad_(False)
    return partial(_frozen_pair_logps, reference, average=pref.length_normalized)


def eval_order(examples: list[PreferenceExample], batch_size: int, d: Dist) -> list[list[int]]:
    """This process's share of `examples` in batches of similar length."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    return [order[j : j + batch_size] for j in range(d.rank * batch_size, len(order), batch_size * d.world_size)]


def compute_reference_logps(splits: dict[str, list[PreferenceExample]], reference: ReferenceFn, batch_size: int,
                            pad_id: int, d: Dist, layout: PairLayout = PairLayout()) -> dict[str, torch.Tensor]:
    """`{split.chosen, split.rejected: (N,)}` for every split, each process doing its share."""
    out = {}
    for split, examples in splits.items():
        chosen, rejected = (torch.zeros(len(examples), dtype=torch.float64) for _ in range(2))
        for indices in eval_order(examples, batch_size, d):
            c, r = reference(make_pair_batch(examples, indices, pad_id, d.device, layout))
            chosen[indices], rejected[indices] = c.double().cpu(), r.double().cpu()
        out[f"{split}.chosen"] = all_reduce_sum(chosen, d).float().cpu()
        out[f"{split}.rejected"] = all_reduce_sum(rejected, d).float().cpu()
    return out


def reference_logps_for_run(cfg: DPOConfig, splits: dict[str, list[PreferenceExample]], reference: ReferenceFn,
                            pad_id: int, d: Dist, layout: PairLayout) -> tuple[dict[str, torch.Tensor], str, bool]:
    """(log-probs, fingerprint, computed now?): the run directory's cache when resuming with the same data and
    model, else one pass over the data."""
    key = fingerprint(splits, model=cfg.model.name, dtype=cfg.model.dtype, average=str(cfg.dpo.length_normalized))
    cache = run_path(cfg.run) / REFERENCE_CACHE
    if cfg.run.resume and (cached := load_reference_logps(cache, key)) is not None:
        log.info("reference log-probs: reused %s", cache)
        return cached, key, False
    t0 = time.perf_counter()
    logps = compute_reference_logps(splits, reference, cfg.optim.batch_size, pad_id, d, layout)
    log.info("reference log-probs: computed for %d pairs in %.1f s", sum(len(s) for s in splits.values()),
             time.perf_counter() - t0)
    return logps, key, True


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, step_loss: Callable, batches: Iterable[dict], keys: list[str],
                   d: Dist) -> dict[str, float]:
    """Pair-mean loss and metrics over held-out batches, over all processes, as `eval/NAME`."""
    model.eval()
    totals = dict.fromkeys(keys, 0.0)
    count = 0
    for batch in batches:
        loss, sums = step_loss(unwrap(model), batch)
        for k, v in {"loss": float(loss), **sums}.items():
            totals[k] += v
        count += batch["count"]
    model.train()
    reduced = all_reduce_sum(torch.tensor([count, *totals.values()], dtype=torch.float64), d).tolist()
    return {f"eval/{k}": v / max(reduced[0], 1.0) for k, v in zip(totals, reduced[1:])}


def train(cfg: DPOConfig) -> Path:
    d = setup_distributed(cfg.run.device)
    try:
        return _train(cfg, d)
    finally:
        teardown(d)


def _train(cfg: DPOConfig, d: Dist) -> Path:
    # -- check every input before anything is written ----------------------------------------
    check_run_dir(cfg.run)
    tokenizer = load_tokenizer(cfg.model.name)
    train_examples, eval_examples, data_lineage = prepare_data(cfg, tokenizer)
    splits = {"train": train_examples, "eval": eval_examples}

    # -- set up ------------------------------------------------------------------------------
    seed_everything(cfg.run.seed)
    model, tokenizer = load_model(cfg.model, d.device)
    pad_id = tokenizer.pad_token_id
    layout = pair_layout(model, cfg.data.share_prompt)

    # -- reference log-probs, from the starting weights: before any update or checkpoint load --
    reference = reference_fn(cfg.dpo, model)
    ref_logps = None
    if reference is not None and cfg.dpo.reference == "precompute":
        ref_logps, ref_key, ref_computed = reference_logps_for_run(cfg, splits, reference, pad_id, d, layout)
        reference = None  # from here on the live model trains and is no reference

    model.train()
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = build_optimizer(model, cfg.optim)
    schedule = Schedule([len(e) for e in train_examples], cfg.optim.batch_size * d.world_size,
                        cfg.optim.grad_accum, cfg.run.seed, cfg.data.bucket_by_length)
    total_steps = schedule.total_steps(cfg.optim.max_steps, cfg.optim.epochs)
    scheduler = build_scheduler(optimizer, total_steps, cfg.optim)
    run = start_run(cfg.run, cfg, d, model, optimizer, scheduler, total_steps, data_lineage, cfg.model.name, "dpo",
                    objective=cfg.dpo.loss)
    if ref_logps is not None and ref_computed and d.is_main:
        save_reference_logps(run.dir / REFERENCE_CACHE, ref_logps, ref_key)
    step_loss = partial(preference_step_loss, cfg.dpo)

    def batch(split: str, indices: list[int]) -> dict:
        m = make_pair_batch(splits[split], indices, pad_id, d.device, layout)
        if ref_logps is not None:
            m["ref_chosen_logps"] = ref_logps[f"{split}.chosen"][indices].to(d.device)
            m["ref_rejected_logps"] = ref_logps[f"{split}.rejected"][indices].to(d.device)
        elif reference is not None:
            m["ref_chosen_logps"], m["ref_rejected_logps"] = reference(m)
        return m

    def evaluate() -> dict[str, float]:
        batches = (batch("eval", b) for b in eval_order(eval_examples, cfg.optim.batch_size, d))
        keys = ["loss", *REWARD_METRICS] + (["nll_loss"] if cfg.dpo.nll_coef > 0 else [])
        return evaluate_pairs(model, step_loss, batches, keys, d)

    # -- loop --------------------------------------------------------------------------------
    pairs_done = 0
    for step in range(run.start_step, total_steps):
        micro = [batch("train", b[d.rank :: d.world_size]) for b in schedule.step_batches(step)]
        loss, metrics = accumulate(model, micro, step_loss, d)
        grad_norm = optimizer_step(model, optimizer, scheduler, cfg.optim.max_grad_norm, loss, run, step + 1)
        pairs_done += sum(len(b) for b in schedule.step_batches(step))
        metrics = {"train/loss": loss, **metrics, "train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0],
                   "train/epoch": (step + 1) / schedule.steps_per_epoch,
                   "perf/pairs_per_second": pairs_done / max(1e-9, time.perf_counter() - run.t0)}
        end_step(run, step + 1, metrics, sum(m["n_input"] for m in micro), evaluate if eval_examples else None,
                 model, optimizer, scheduler)

    # -- save --------------------------------------------------------------------------------
    return finish_run(run, model, tokenizer)
