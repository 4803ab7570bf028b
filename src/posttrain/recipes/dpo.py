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

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Collection, Literal

import torch

from posttrain.config import DataConfig, DistConfig, ModelConfig, OptimConfig, RunConfig, check
from posttrain.data.preference import PREFERENCE_KINDS, PairBatch, PreferenceExample, pair_batch, tokenize_preferences
from posttrain.data.splits import train_and_heldout
from posttrain.data.tokenize import use_chat_template
from posttrain.errors import ConfigError
from posttrain.eval.document import document_run
from posttrain.losses.preference import ONE_OBJECTIVE_PARAMETERS, dpo_loss, ipo_loss, simpo_loss
from posttrain.models.attention import pair_layout
from posttrain.models.load import load_model, load_tokenizer, save_model
from posttrain.models.logprobs import pair_logps
from posttrain.models.reference import REFERENCE_CACHE, Reference, fingerprint, load_logps, precompute_logps, save_logps
from posttrain.training.checkpoint import seed_everything
from posttrain.training.distributed import Dist, all_reduce_sum, check_heldout, distributed, parallelize
from posttrain.training.loop import (
    DataOrder,
    accumulate,
    end_step,
    eval_order,
    evaluate,
    finish_run,
    interruptible,
    optimizer_step,
    start_run,
)
from posttrain.training.metrics import check_trackers
from posttrain.training.optim import build_optimizer, build_scheduler
from posttrain.training.rundir import check_run_dir, resume_config, run_finished, run_path
from posttrain.training.summary import print_summary

log = logging.getLogger(__name__)

# The held-out figures printed when training ends (training/summary.py), formatted.
SUMMARY = {"eval/rewards/accuracies": "held-out implicit-reward accuracy {:.1%}",
           "eval/rewards/margins": "margin {:.4g}"}

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
        check(self.beta > 0, "dpo.beta", "must be > 0", self.beta)
        check(self.loss != "simpo" or self.beta >= 1, "dpo.beta", "SimPO's beta scales average log-probs; "
               "use >= 1 (the authors use 2.0-2.5): pass --dpo.beta 2.0", self.beta)
        check(0 <= self.label_smoothing < 0.5, "dpo.label_smoothing",
               "must be in [0, 0.5) (0.5 means labels are coin flips)", self.label_smoothing)
        default = {f.name: f.default for f in dataclasses.fields(self)}  # not retyped: a new default stays right
        check(self.label_smoothing == default["label_smoothing"] or self.loss == "dpo", "dpo.label_smoothing",
               f"is conservative DPO and only applies with --dpo.loss dpo (not {self.loss})", self.label_smoothing)
        check(self.simpo_gamma_beta_ratio >= 0, "dpo.simpo_gamma_beta_ratio", "must be >= 0",
               self.simpo_gamma_beta_ratio)
        check(self.simpo_gamma_beta_ratio == default["simpo_gamma_beta_ratio"] or self.loss == "simpo",
              "dpo.simpo_gamma_beta_ratio",
               f"only applies with --dpo.loss simpo (not {self.loss})", self.simpo_gamma_beta_ratio)
        check(self.nll_coef >= 0, "dpo.nll_coef", "must be >= 0 (0 disables the NLL term)", self.nll_coef)
        check(self.reference == "precompute" or self.loss != "simpo", "dpo.reference",
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

    train: str = "builtin:arithmetic-pairs"
    """Preference data: JSONL/JSON/CSV/Parquet or a datasets folder with prompt, chosen, rejected (TRL's
    preference format), or ranking rows (prompt, responses, order), each used as its C(K,2) pairs, or
    `builtin:NAME`. `posttrain data pairs` makes such a file from a model's samples; the default is the
    built-in arithmetic pairs (chosen the answer, rejected a wrong number or the answer with chatty filler)."""
    share_prompt: bool = True
    """Encode each prompt once for both of its responses: one row [prompt, chosen, rejected] with a block
    attention mask (prefix sharing, arXiv:2410.20305) instead of two rows that both hold the prompt. The
    log-probs are the same; fewer tokens go through the model (the prompt's share of each pair). Applies when
    the model's attention takes a 4D mask (sdpa, eager; not flash-attention), else two rows are used."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(not self.packing, "data.packing", "is not supported for preference pairs (each pair is its own "
               "row, [prompt, chosen, rejected], or two with --data.no-share-prompt); drop --data.packing",
              self.packing)


@dataclass
class DPOConfig:
    """Direct preference optimization (DPO, IPO, SimPO) on preference pairs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=10, batch_size=16))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="dpo"))
    dist: DistConfig = field(default_factory=DistConfig)
    dpo: PreferenceConfig = field(default_factory=PreferenceConfig)


def prepare_data(cfg: DPOConfig, tokenizer) -> tuple[list[PreferenceExample], list[PreferenceExample], list[dict]]:
    """Load, validate and tokenize train and held-out pairs (data/splits.py's held-out policy, by prompt),
    after setting data.chat_template on `tokenizer`."""
    if not cfg.data.train:
        raise ConfigError("data.train is empty: name a file of preference pairs (prompt, chosen, rejected), "
                          "e.g. --data.train pairs.jsonl; `posttrain data pairs` makes one from a model's samples")
    use_chat_template(tokenizer, cfg.data.chat_template)
    return train_and_heldout(cfg.data, PREFERENCE_KINDS,
                             lambda records, source: tokenize_preferences(records, tokenizer, cfg.data, source=source),
                             key=lambda e: e.prompt_ids, seed=cfg.run.seed)


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


def preference_step_loss(pref: PreferenceConfig, model: torch.nn.Module, batch: PairBatch
                         ) -> tuple[torch.Tensor, dict]:
    """Loss SUMMED over the batch's pairs and metric sums, as the training engine wants."""
    chosen, rejected, chosen_mean = pair_logps(model, batch, pref.length_normalized)
    loss, metrics = preference_loss(pref, chosen, rejected, batch.ref_chosen_logps, batch.ref_rejected_logps)
    n = batch.count
    loss_sum = loss * n  # the losses return means over the batch; sums make accumulation exact
    sums = {k: float(v) * n for k, v in metrics.items()}
    if pref.nll_coef > 0:
        # RPO's NLL is per pair, over the chosen tokens (arXiv:2404.19733 eq. 3): nll_loss taken one row at a
        # time. A token mean over the micro-batch would change with how a step is split into micro-batches.
        nll = -chosen_mean  # (B,)
        loss_sum = loss_sum + pref.nll_coef * nll.sum()
        sums["nll_loss"] = float(nll.detach().sum())
    return loss_sum, sums


def reference_logps_for_run(cfg: DPOConfig, splits: dict[str, list[PreferenceExample]], reference: Reference,
                            make_batch, d: Dist) -> tuple[dict[str, torch.Tensor], str, bool]:
    """(`{split.chosen, split.rejected: (N,)}`, fingerprint, computed now?): the run directory's cache when
    resuming with the same data and model, else one no-grad pass over every split (each process its share)."""
    token_ids = {split: ([e.prompt_ids, e.chosen_ids, e.rejected_ids] for e in examples)
                 for split, examples in splits.items()}
    key = fingerprint(token_ids, model=cfg.model.name, dtype=cfg.model.dtype, average=str(cfg.dpo.length_normalized))
    cache = run_path(cfg.run) / REFERENCE_CACHE
    if cfg.run.resume and (cached := load_logps(cache, key)) is not None:
        log.info("reference log-probs: reused %s", cache)
        return cached, key, False
    t0 = time.perf_counter()

    def batches(split: str):
        lengths = [len(e) for e in splits[split]]
        return ((b, make_batch(split, b)) for b in eval_order(lengths, cfg.optim.batch_size, d))

    def score(batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return reference(lambda m: pair_logps(m, batch, cfg.dpo.length_normalized)[:2])

    logps = precompute_logps({s: len(e) for s, e in splits.items()}, batches, score, ("chosen", "rejected"),
                             reduce=lambda t: all_reduce_sum(t, d))
    log.info("reference log-probs: computed for %d pairs in %.1f s", sum(len(s) for s in splits.values()),
             time.perf_counter() - t0)
    return logps, key, True


ONE_LOSS_OPTIONS = {f"dpo.{name}": loss for name, loss in ONE_OBJECTIVE_PARAMETERS.items()}
"""Options that only one --dpo.loss reads: given with another, they are refused even at their default value."""


def train(cfg: DPOConfig, given: Collection[str] | None = None) -> Path:
    """Train; returns the run directory. Resuming, the run's saved config is used: the options in `given` (dotted
    names, those set on the command line or in --config; None, as from Python: every field of cfg) must agree
    with it (training/rundir.py::resume_config)."""
    for option, loss in ONE_LOSS_OPTIONS.items():  # given at its default value, __post_init__ cannot tell
        if given is not None and option in given and cfg.dpo.loss != loss and not cfg.run.resume:
            raise ConfigError(f"{option}: only applies with --dpo.loss {loss} (not {cfg.dpo.loss}); drop it")
    cfg = resume_config(cfg, given)
    with distributed(cfg.run.device, cfg.run.threads) as d:
        return _train(cfg, d)



def _train(cfg: DPOConfig, d: Dist) -> Path:
    if run_finished(cfg.run, d.is_main):  # resuming a finished run changes nothing
        return run_path(cfg.run)
    # -- check every input before anything is written; the run directory last, so a data error shows first --
    tokenizer = load_tokenizer(cfg.model.name)
    train_examples, eval_examples, data_lineage = prepare_data(cfg, tokenizer)
    check_heldout(len(eval_examples), d, cfg.dist, source=cfg.data.eval)
    check_trackers(cfg.run.trackers)
    check_run_dir(cfg.run, d.world_size)
    splits = {"train": train_examples, "eval": eval_examples}

    # -- set up ------------------------------------------------------------------------------
    seed_everything(cfg.run.seed)
    model, _ = load_model(cfg.model, d.device)  # the data's tokenizer, with data.chat_template, is the one saved
    pad_id = tokenizer.pad_token_id
    layout = pair_layout(model, cfg.data.share_prompt)

    def make_batch(split: str, indices: list[int]) -> PairBatch:
        return pair_batch(splits[split], indices, pad_id, d.device, layout)

    # -- reference log-probs, from the starting weights: before any update or checkpoint load --
    reference = ref_logps = None
    if cfg.dpo.needs_reference:
        reference = Reference(model, keep_copy=cfg.dpo.reference == "online")
    if reference is not None and cfg.dpo.reference == "precompute":
        ref_logps, ref_key, ref_computed = reference_logps_for_run(cfg, splits, reference, make_batch, d)
        reference = None  # from here on the live model trains and is no reference

    model.train()
    model = parallelize(model, d, cfg.dist, reference)  # DDP or FSDP2 under torchrun (--dist.strategy)
    optimizer = build_optimizer(model, cfg.optim)
    order = DataOrder([len(e) for e in train_examples], cfg.optim.batch_size * d.world_size,
                      cfg.optim.grad_accum, cfg.run.seed, cfg.data.bucket_by_length)
    total_steps = order.total_steps(cfg.optim.max_steps, cfg.optim.epochs)
    scheduler = build_scheduler(optimizer, total_steps, cfg.optim)
    run = start_run(cfg.run, cfg, d, model, optimizer, scheduler, total_steps, data_lineage, cfg.model.name, "dpo",
                    objective=cfg.dpo.loss)
    if ref_logps is not None and ref_computed and d.is_main:
        save_logps(run.dir / REFERENCE_CACHE, ref_logps, ref_key)
    step_loss = partial(preference_step_loss, cfg.dpo)

    def batch_with_reference(split: str, indices: list[int]) -> PairBatch:
        b = make_batch(split, indices)
        if ref_logps is not None:
            b.ref_chosen_logps = ref_logps[f"{split}.chosen"][indices].to(d.device)
            b.ref_rejected_logps = ref_logps[f"{split}.rejected"][indices].to(d.device)
        elif reference is not None:
            b.ref_chosen_logps, b.ref_rejected_logps = reference(
                lambda m: pair_logps(m, b, cfg.dpo.length_normalized)[:2])
        return b

    def evaluate_heldout() -> dict[str, float]:
        batches = (batch_with_reference("eval", b)
                   for b in eval_order([len(e) for e in eval_examples], cfg.optim.batch_size, d))
        keys = [*REWARD_METRICS] + (["nll_loss"] if cfg.dpo.nll_coef > 0 else [])
        return {f"eval/{k}": v for k, v in evaluate(model, batches, step_loss, keys, d).items()}

    # -- loop --------------------------------------------------------------------------------
    pairs_done = 0
    with interruptible(run, model, optimizer, scheduler):  # Ctrl-C: keep the last step, say how to resume
        for step in range(run.start_step, total_steps):
            micro = [batch_with_reference("train", b[d.rank :: d.world_size]) for b in order.step_batches(step)]
            loss, metrics = accumulate(model, micro, step_loss, d)
            grad_norm = optimizer_step(model, optimizer, scheduler, cfg.optim.max_grad_norm, loss, run, step + 1)
            pairs_done += sum(len(b) for b in order.step_batches(step))
            metrics = {"train/loss": loss, **metrics, "train/grad_norm": grad_norm,
                       "train/lr": scheduler.get_last_lr()[0], "train/epoch": (step + 1) / order.steps_per_epoch,
                       "perf/pairs_per_second": pairs_done / max(1e-9, time.perf_counter() - run.t0)}
            end_step(run, step + 1, metrics, sum(m.n_input for m in micro), evaluate_heldout if eval_examples else None,
                     model, optimizer, scheduler)

    # -- save --------------------------------------------------------------------------------
    finish_run(run, model, tokenizer, save=lambda plain, out: save_model(plain, tokenizer, out, cfg.model))
    if d.is_main:  # report.html and the model card final/README.md
        document_run(run.dir, "dpo")
    return print_summary(run.dir, "dpo", SUMMARY, cfg.run.progress and d.is_main)
