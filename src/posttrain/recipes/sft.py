"""Supervised fine-tuning (SFT) on demonstrations: chat, prompt-completion or plain text.

The loss is next-token negative log-likelihood on assistant tokens only (every token
for plain text), normalised by the number of trained tokens in the whole optimizer
step, across micro-batches and processes. Reads top to bottom:
config -> check inputs -> set up -> loop -> save.

    posttrain sft --data.train chats.jsonl --model.name smollm2 --model.lora-r 8
    torchrun --nproc-per-node 2 -m posttrain sft ...      # DDP: same global batch, same update

Docs: docs/algorithms/sft.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

import torch

from posttrain.config import DataConfig, DistConfig, ModelConfig, OptimConfig, RunConfig
from posttrain.data.batches import SFTBatch, sft_batch
from posttrain.data.records import Conversation, PromptCompletion, Text
from posttrain.data.splits import train_and_heldout
from posttrain.data.tokenize import Example, tokenize_dataset, use_chat_template
from posttrain.eval.document import document_run
from posttrain.losses.sft import sft_loss
from posttrain.models.attention import use_varlen_attention
from posttrain.models.load import load_model, load_tokenizer, save_model
from posttrain.models.logprobs import accepts_logits_to_keep
from posttrain.training.checkpoint import seed_everything
from posttrain.training.distributed import Dist, check_heldout, distributed, parallelize
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

# The held-out figures printed when training ends (training/summary.py), formatted.
SUMMARY = {"eval/loss": "held-out loss {:.3f}"}
SFT_KINDS = (Conversation, PromptCompletion, Text)


@dataclass
class SFTDataConfig(DataConfig):
    """Demonstrations (conversations, prompt-completion pairs or plain text) and how they are cut into batches."""

    eval_fraction: float = 0.0
    bucket_by_length: bool = False
    """Group examples of similar length into the same optimizer step. Off for SFT: padding-free rows compute no
    pad token, so it gains little speed, and where length goes with the kind of example each step then holds
    one kind, which learned worse (figures in docs/algorithms/sft.md). With `--data.no-padding-free` it pads less."""
    padding_free: bool = True
    """Put all examples of a micro-batch in ONE row, back to back, so that no pad token is computed; attention
    stays inside each example. The loss is the same as with padded rows. Used when the model runs sdpa attention
    (the default), else padded rows. With `packing`, rows of max_length are used instead, with the same attention."""


@dataclass
class SFTConfig:
    """Supervised fine-tuning: next-token loss on the assistant turns of demonstrations."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=20))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="sft"))
    dist: DistConfig = field(default_factory=DistConfig)


def prepare_data(cfg: SFTConfig, tokenizer) -> tuple[list[Example], list[Example], list[dict]]:
    """Load, validate and tokenize train and held-out data (data/splits.py's held-out policy; a fraction is held
    out by example, as SFT rows carry no prompt key). Sets data.chat_template on `tokenizer` first. Returns
    train, eval, lineage entries."""
    use_chat_template(tokenizer, cfg.data.chat_template)
    return train_and_heldout(cfg.data, SFT_KINDS,
                             lambda records, source: tokenize_dataset(records, tokenizer, cfg.data, source=source),
                             key=id, seed=cfg.run.seed)


def sft_step_loss(model: torch.nn.Module, batch: SFTBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token NLL SUMMED over the batch's trained tokens (`batch.count` of them)."""
    loss_sum, _ = sft_loss(model(**batch.inputs).logits, batch.labels)
    return loss_sum, {}


def train(cfg: SFTConfig, given: Collection[str] | None = None) -> Path:
    """Train; returns the run directory. Resuming, the run's saved config is used: the options in `given` (dotted
    names, those set on the command line or in --config; None, as from Python: every field of cfg) must agree
    with it (training/rundir.py::resume_config)."""
    cfg = resume_config(cfg, given)
    with distributed(cfg.run.device, cfg.run.threads) as d:
        return _train(cfg, d)


def _train(cfg: SFTConfig, d: Dist) -> Path:
    if run_finished(cfg.run, d.is_main):  # resuming a finished run changes nothing
        return run_path(cfg.run)
    # -- check every input before anything is written; the run directory last, so a data error shows first --
    tokenizer = load_tokenizer(cfg.model.name)
    train_examples, eval_examples, data_lineage = prepare_data(cfg, tokenizer)
    check_heldout(len(eval_examples), d, cfg.dist, source=cfg.data.eval)
    check_trackers(cfg.run.trackers)
    check_run_dir(cfg.run, d.world_size)

    # -- set up ------------------------------------------------------------------------------
    seed_everything(cfg.run.seed)
    model, _ = load_model(cfg.model, d.device)  # the data's tokenizer, with data.chat_template, is the one saved
    model.train()
    model = parallelize(model, d, cfg.dist)  # DDP or FSDP2 under torchrun (--dist.strategy)
    optimizer = build_optimizer(model, cfg.optim)
    order = DataOrder([len(e) for e in train_examples], cfg.optim.batch_size * d.world_size,
                      cfg.optim.grad_accum, cfg.run.seed, cfg.data.bucket_by_length)
    total_steps = order.total_steps(cfg.optim.max_steps, cfg.optim.epochs)
    scheduler = build_scheduler(optimizer, total_steps, cfg.optim)
    run = start_run(cfg.run, cfg, d, model, optimizer, scheduler, total_steps, data_lineage, cfg.model.name, "sft")
    pad_id = tokenizer.pad_token_id
    trim = accepts_logits_to_keep(model)  # the LM head then runs only where the loss reads logits
    # padding-free rows and packed rows need attention that keeps to each document without an (N, N) mask
    varlen = (cfg.data.padding_free or cfg.data.packing) and use_varlen_attention(model)
    padding_free = cfg.data.padding_free and varlen

    def make_batch(indices: list[int]) -> SFTBatch:
        return sft_batch(train_examples, indices, pad_id, cfg.data.packing, d.device, cfg.data.max_length, trim,
                         padding_free)

    def evaluate_heldout() -> dict[str, float]:
        return {"eval/loss": evaluate_loss(model, eval_examples, cfg.optim.batch_size, pad_id, d, trim, padding_free)}

    # -- loop --------------------------------------------------------------------------------
    with interruptible(run, model, optimizer, scheduler):  # Ctrl-C: keep the last step, say how to resume
        for step in range(run.start_step, total_steps):
            micro = [make_batch(b[d.rank :: d.world_size]) for b in order.step_batches(step)]
            loss, _ = accumulate(model, micro, sft_step_loss, d)
            grad_norm = optimizer_step(model, optimizer, scheduler, cfg.optim.max_grad_norm, loss, run, step + 1)
            metrics = {"train/loss": loss, "train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0],
                       "train/epoch": (step + 1) / order.steps_per_epoch}
            end_step(run, step + 1, metrics, sum(m.n_input for m in micro), evaluate_heldout if eval_examples else None,
                     model, optimizer, scheduler)

    # -- save --------------------------------------------------------------------------------
    finish_run(run, model, tokenizer, save=lambda plain, out: save_model(plain, tokenizer, out, cfg.model))
    if d.is_main:  # report.html and the model card final/README.md
        document_run(run.dir, "sft")
    return print_summary(run.dir, "sft", SUMMARY, cfg.run.progress and d.is_main)


def evaluate_loss(model: torch.nn.Module, examples: list[Example], batch_size: int, pad_id: int, d: Dist,
                  trim_logits: bool = False, padding_free: bool = False) -> float:
    """Token-mean NLL of held-out examples, over all processes (padded or padding-free rows, never packed)."""
    batches = (sft_batch(examples, b, pad_id, False, d.device, trim_logits=trim_logits, padding_free=padding_free)
               for b in eval_order([len(e) for e in examples], batch_size, d))
    return evaluate(model, batches, sft_step_loss, (), d)["loss"]
