"""The pieces of a training loop that every recipe shares, as plain functions.

A recipe's loop reads:

    order = DataOrder(lengths, cfg.optim.batch_size * d.world_size, cfg.optim.grad_accum, seed, bucket)
    run = start_run(cfg.run, cfg, d, model, optimizer, scheduler, total_steps, lineage, base_model, label)
    with interruptible(run, model, optimizer, scheduler):  # Ctrl-C keeps the last step and prints how to resume
        for step in range(run.start_step, run.total_steps):
            micro = [make_batch(b[d.rank :: d.world_size]) for b in order.step_batches(step)]  # the recipe's batches
            loss, metrics = accumulate(model, micro, loss_fn, d)
            grad_norm = optimizer_step(model, optimizer, scheduler, cfg.optim.max_grad_norm, loss, run, step + 1)
            end_step(run, step + 1, {...metrics...}, tokens, eval_fn, model, optimizer, scheduler)
    finish_run(run, model, tokenizer)

and its held-out evaluation is `evaluate(model, [make_batch(b) for b in eval_order(...)], loss_fn, keys, d)`.

`loss_fn(model, batch)` returns the loss SUMMED over the batch's units (trained tokens for
SFT, pairs for DPO, prompt groups for reward models) and metric sums over the same units;
`batch.count` says how many units the batch has and `batch.n_input` how many tokens went in
(the batch dataclasses of `data/`). Dividing by the count over all micro-batches and
processes of the step makes gradient accumulation and DDP give the same update as one
big batch; held-out figures are the same sums divided by the held-out count.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import torch

from posttrain.config import RunConfig
from posttrain.config_parse import to_jsonable
from posttrain.data.collate import length_batches
from posttrain.errors import Terminated, TrainingDiverged, UserError, raise_terminated
from posttrain.models.load import count_parameters, save_pretrained_merged
from posttrain.models.lora import unwrap
from posttrain.models.sharding import full_model
from posttrain.training.checkpoint import (
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from posttrain.training.distributed import Dist, all_reduce_sum, no_sync
from posttrain.training.metrics import MetricsSink, TrainProgress
from posttrain.training.rundir import (
    discard_after,
    drop_replaced,
    prepare_run_dir,
    put_back,
    record_resume,
    replaced_path,
    resume_checkpoint,
    write_lineage,
)


class Batch(Protocol):
    """What the engine reads of a recipe's batch (SFTBatch, PairBatch, GroupBatch)."""

    count: int  # units the loss is summed over
    n_input: int  # tokens that went through the model


LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class DataOrder:
    """The data order, a pure function of (seed, epoch, step): resuming needs no sampler state.

    Each epoch is shuffled into groups of one optimizer step's examples (micro-batch size x
    processes x grad_accum). A group is split into grad_accum micro-batches (by length when
    bucketing, to waste less on padding) and each process takes every world_size-th example
    of a micro-batch. So 1x8, 4x2 and 2 processes x 4 all see the same examples in a step.
    """

    lengths: list[int]
    micro_batch: int  # examples per micro-batch, summed over processes
    grad_accum: int
    seed: int
    bucket: bool
    _cache: dict[int, list[list[int]]] = field(default_factory=dict, repr=False)

    def epoch(self, e: int) -> list[list[int]]:
        if e not in self._cache:
            groups = length_batches(self.lengths, self.micro_batch * self.grad_accum, shuffle=True,
                                    seed=self.seed + e, bucket=self.bucket)
            self._cache = {e: [g for g in groups if len(g) == self.micro_batch * self.grad_accum] or groups}
        return self._cache[e]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.epoch(0))

    def total_steps(self, max_steps: int, epochs: float) -> int:
        return max_steps or max(1, math.floor(epochs * self.steps_per_epoch))

    def step_batches(self, step: int) -> list[list[int]]:
        """The grad_accum global micro-batches of optimizer step `step` (0-based)."""
        e, i = divmod(step, self.steps_per_epoch)
        group = self.epoch(e)[i]
        if self.bucket:
            group = sorted(group, key=lambda j: (self.lengths[j], j))
        size = -(-len(group) // self.grad_accum)
        return [group[k : k + size] for k in range(0, len(group), size)]


@dataclass
class Run:
    """What a recipe holds while it trains."""

    dir: Path
    cfg: RunConfig
    d: Dist
    start_step: int
    total_steps: int
    sink: MetricsSink
    bar: TrainProgress
    label: str  # the command: `posttrain LABEL`
    created: bool  # this process made the run directory (a new run, not a resume)
    t0: float = field(default_factory=time.perf_counter)
    tokens: int = 0  # input tokens processed since this process started, all ranks
    completed: int = 0  # the last step whose end_step returned
    updating: int = 0  # the last step whose optimizer update began
    # Ctrl-C or SIGTERM while a step's update runs is held until the step ends (`hold_interrupts`): the signals'
    # handlers before that, and the signal that came meanwhile (0: none)
    held: dict[int, Any] | None = None
    interrupt_pending: int = 0
    rng: dict[str, Any] | None = None  # the RNG states right after step `completed`, for a checkpoint of it
    checkpoint_seconds: float = 0.0  # wall time of this process's checkpoint writes, part of time/train_seconds
    # a recipe's own state beyond weights, optimizer, scheduler and RNGs (PPO's KL coefficient), JSON-able: saved
    # with each checkpoint (state.json "recipe") and restored by a resume. Change it only after the step's update
    # began, so that an interrupt's checkpoint of the last completed step holds that step's state.
    state: dict[str, Any] = field(default_factory=dict)


def start_run(
    run_cfg: RunConfig, full_cfg: Any, d: Dist, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: Any, total_steps: int, data_lineage: list[dict], base_model: str, label: str, **lineage_extra: Any,
) -> Run:
    """Create the run directory (resuming: load its checkpoint and note the resume in lineage.json), open metrics,
    the trackers and progress. A failure here removes the directory it created, so a retry is not refused."""
    config = to_jsonable(full_cfg)
    run_dir, created = prepare_run_dir(run_cfg, config, d.is_main)
    if d.threads_note and d.is_main and run_cfg.progress:  # the checks have passed: a run is starting
        print(d.threads_note, file=sys.stderr)
    try:
        start, lineage, state = 0, {}, {}
        if run_cfg.resume:
            ckpt = resume_checkpoint(run_cfg)
            saved = load_checkpoint(ckpt, model, optimizer, scheduler, d.rank)
            start, state = saved["step"], saved.get("recipe", {})
            if d.is_main:
                discard_after(run_dir, start)  # what a --run.resume-from leaves behind it is trained again
                lineage = record_resume(run_dir, start, ckpt, full_cfg)
        elif d.is_main:
            trainable, total = count_parameters(unwrap(model))
            base = {"name": base_model, "parameters": total, "trainable": trainable}
            lineage = write_lineage(run_dir, base, data_lineage, **lineage_extra)
        sink = MetricsSink(run_dir, d.is_main, run_cfg.trackers, {"config": config, "lineage": lineage}, start)
    except BaseException:
        if created and d.is_main:
            put_back(run_dir)  # the new run is removed; a run --run.overwrite replaced is back
        raise
    bar = TrainProgress(total_steps, start, run_cfg.progress and d.is_main, label)
    return Run(run_dir, run_cfg, d, start, total_steps, sink, bar, label, created, completed=start, updating=start,
               rng=rng_state(), state=state)


def accumulate(model: torch.nn.Module, micro: list[Batch], loss_fn: LossFn, d: Dist) -> tuple[float, dict[str, float]]:
    """Forward and backward over a step's micro-batches; returns the step's mean loss and metrics.

    Each micro-batch's summed loss is divided by the unit count of the whole step (all
    micro-batches, all processes), so the accumulated gradient is the mean over the step.
    """
    count = all_reduce_sum(sum(m.count for m in micro), d).item()
    loss_sum = 0.0
    sums: dict[str, float] = {}
    for i, m in enumerate(micro):
        last = i == len(micro) - 1
        with no_sync(model, last):
            loss, metric_sums = loss_fn(model, m)
            # DDP averages gradients over processes: multiply by world size to get sum / count
            (loss * d.world_size / max(count, 1)).backward()
        loss_sum += float(loss.detach())
        for k, v in metric_sums.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    keys = sorted(sums)
    totals = all_reduce_sum(torch.tensor([loss_sum] + [sums[k] for k in keys], dtype=torch.float64), d)
    mean = (totals / max(count, 1)).tolist()
    return mean[0], dict(zip(keys, mean[1:]))


def eval_order(lengths: list[int], batch_size: int, d: Dist) -> list[list[int]]:
    """This process's share of the held-out examples, in batches of similar length: every world_size-th example of
    the length-sorted order, cut into as many batches as every other process's share (about `batch_size` each),
    so that the processes of a sharded model run their forwards in step (`models.sharding`)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    mine = order[d.rank :: d.world_size]
    n = max(1, min(-(-len(order) // (batch_size * d.world_size)), len(order) // d.world_size))
    size, extra = divmod(len(mine), n)
    cuts = [k * size + min(k, extra) for k in range(n + 1)]
    return [mine[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[Batch], loss_fn: LossFn, keys: Sequence[str], d: Dist
             ) -> dict[str, float]:
    """Held-out `loss` and the metrics `keys`, each its sum over every process's batches divided by their total
    count: the same per-unit means that `accumulate` gives for a training step. `keys` is fixed up front
    because a process may have no held-out batch at all, and every process must reduce the same tensor."""
    model.eval()
    count, loss_sum = 0, 0.0
    sums = dict.fromkeys(keys, 0.0)
    for batch in batches:
        loss, metric_sums = loss_fn(unwrap(model), batch)  # unwrapped: no gradient sync to wait for
        loss_sum += float(loss)
        for k in keys:
            sums[k] += float(metric_sums[k])
        count += batch.count
    model.train()
    totals = all_reduce_sum(torch.tensor([count, loss_sum, *sums.values()], dtype=torch.float64), d).tolist()
    n = max(totals[0], 1.0)
    return {"loss": totals[1] / n, **{k: v / n for k, v in zip(keys, totals[2:])}}


def optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float, loss: float, run: Run,
    step: int,
) -> float:
    """Clip, then step, unless the loss or the gradient is not finite: then stop, keeping the last checkpoint."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # sharded weights: a DTensor
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        last = latest_checkpoint(run.dir / "checkpoints")
        raise TrainingDiverged(
            f"loss={loss} grad_norm={grad_norm} at step {step}; no update was applied. The last good checkpoint is "
            f"{last or 'none (none written yet)'}; lower --optim.lr, raise --run.save-every frequency, or check the data."
        )
    run.updating = step  # from here the weights are no longer those of step run.completed
    hold_interrupts(run)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def skip_update(optimizer: torch.optim.Optimizer, scheduler: Any, run: Run, step: int) -> None:
    """An optimizer step with nothing to learn from (no unit in it on any process): the weights and AdamW's
    moments stay as they are (a zero-gradient step would still move them by momentum and weight decay), and
    the learning-rate schedule keeps its place."""
    run.updating = step
    hold_interrupts(run)
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": here on purpose
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def end_step(
    run: Run, step: int, metrics: dict[str, float], tokens: int, eval_fn: Callable[[], dict[str, float]] | None,
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
) -> None:
    """After optimizer step `step` (1-based): progress, metrics, periodic evaluation, and a checkpoint every
    `save_every` steps and after the last one."""
    tokens = int(all_reduce_sum(tokens, run.d).item())
    run.tokens += tokens
    run.bar.update(tokens, loss=metrics.get("train/loss", float("nan")))
    last = step == run.total_steps
    if step % run.cfg.log_every == 0 or last:
        rate = run.tokens / max(1e-9, time.perf_counter() - run.t0)
        run.sink.log(step, {**metrics, "perf/tokens_per_second": rate})
    if eval_fn is not None and ((run.cfg.eval_every and step % run.cfg.eval_every == 0) or last):
        run.sink.log(step, eval_fn())
    if last or (run.cfg.save_every and step % run.cfg.save_every == 0):
        t0 = time.perf_counter()
        save_checkpoint(run.dir / "checkpoints", step, model, optimizer, scheduler,
                        {"world_size": run.d.world_size, "total_steps": run.total_steps, "recipe": run.state}, run.d.rank,
                        run.cfg.keep_checkpoints)
        run.checkpoint_seconds += time.perf_counter() - t0
        if run.created and run.d.is_main:
            drop_replaced(run.dir)  # the new run can be resumed: the one --run.overwrite replaces goes now
    run.completed = step
    if not run.d.enabled:  # an interrupt is kept as a checkpoint only by a single process (see interruptible)
        run.rng = rng_state()
    release_interrupts(run)


HELD_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
"""The signals a step's update holds, by the name a message gives them; each is held only while its handler is
the one that raises (Python's KeyboardInterrupt for SIGINT, `errors.raise_terminated` for SIGTERM)."""


def hold_interrupts(run: Run) -> None:
    """From the first update of a step to its end, a Ctrl-C (or SIGTERM: `kill`, a scheduler's preemption) waits
    for the step to finish, so that the interrupt keeps that step (an update half done cannot be checkpointed
    exactly: with several updates per step, as PPO's passes and minibatches, most of a step is its update). A
    second signal stops at once, keeping the last checkpoint on disk. One process only (under torchrun each
    process gets its own signal), in the main thread."""
    if run.held is not None or run.d.enabled or threading.current_thread() is not threading.main_thread():
        return
    raising = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: raise_terminated}
    held = {s: signal.getsignal(s) for s in HELD_SIGNALS if signal.getsignal(s) is raising[s]}
    if not held:
        return

    def on_signal(signum: int, frame: Any) -> None:
        if run.interrupt_pending:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        run.interrupt_pending = signum
        on_disk = checkpoint_steps(run.dir / "checkpoints")
        now = f"keeping step {on_disk[-1]}, the last checkpoint" if on_disk else "with no checkpoint to keep"
        name = HELD_SIGNALS[signum]
        print(f"\n{name}: finishing step {run.updating} so that it is kept ({name} again to stop now, {now})",
              file=sys.stderr)

    for s in held:
        signal.signal(s, on_signal)
    run.held = held


def release_interrupts(run: Run) -> None:
    """At the end of a step: the signals' handlers back, and the interrupt that came during the step raised."""
    if run.held is None:
        return
    _handlers_back(run)
    if pending := run.interrupt_pending:
        run.interrupt_pending = 0
        raise Terminated if pending == signal.SIGTERM else KeyboardInterrupt


def _handlers_back(run: Run) -> None:
    for s, handler in (run.held or {}).items():
        signal.signal(s, handler)
    run.held = None


@contextmanager
def interruptible(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> Iterator[None]:
    """Around the loop: on Ctrl-C (KeyboardInterrupt) or SIGTERM (`errors.Terminated`, one) keep the last completed
    step as a checkpoint, close the metrics, print the command that resumes, and let the interrupt go on (the CLI
    exits 130, or 143 for SIGTERM).

    The checkpoint is exact: the weights, optimizer and scheduler are still those of the last completed step
    until the next step's update begins, and the RNG states are the ones saved after that step. A Ctrl-C during
    an update waits for its step to end (`hold_interrupts`), and that step is kept. A second Ctrl-C there (or one
    under torchrun, where the processes stop at different places) keeps the last checkpoint on disk instead; a
    new run interrupted before its first step is removed, as is one stopped by a user's mistake (UserError: a
    reward that raises, ...) before its first step."""
    try:
        yield
    except KeyboardInterrupt:
        run.bar.close()
        kept = _keep_on_interrupt(run, model, optimizer, scheduler)
        run.sink.close()
        if run.d.is_main:
            where = f"interrupted in step {run.completed + 1} of {run.total_steps}"
            if kept is not None:
                if run.created:
                    drop_replaced(run.dir)  # the new run can be resumed: what --run.overwrite replaced goes
                print(f"{where}: step {checkpoint_steps(kept.parent)[-1]} is kept in {kept}\n"
                      f"resume with: {resume_command(run)}", file=sys.stderr)
            elif undone := _undo_new_run(run, run.completed == 0):
                print(f"{where}, {undone}", file=sys.stderr)
            else:
                print(f"{where}: no checkpoint to keep; start again with --run.overwrite", file=sys.stderr)
        raise
    except Exception as e:  # a mistake found once the run began (a reward that raises on its first completions), a crash
        replaced = replaced_path(run.dir).is_dir()  # a run --run.overwrite set aside, which comes back
        if run.d.is_main and (undone := _undo_new_run(run, isinstance(e, UserError) and run.completed == 0)):
            run.bar.close()
            run.sink.close()
            if not isinstance(e, UserError) or replaced:  # a UserError's own line says the rest
                print(f"the run stopped in step {run.completed + 1} of {run.total_steps}, {undone}", file=sys.stderr)
        raise
    finally:
        _handlers_back(run)  # left inside a step (a second Ctrl-C, an error): the handlers from before the step


def _undo_new_run(run: Run, remove: bool) -> str | None:
    """A new run stopped with no checkpoint to resume from: with `remove` (it completed no step, so that the retry
    after the fix is not refused), or where --run.overwrite set a run aside for it, the new run is removed and the
    one it replaced put back. What was done, in words; None where nothing was (a resumed run, a new run with a
    checkpoint, or one whose steps stay to be looked at)."""
    if not run.created or latest_checkpoint(run.dir / "checkpoints") is not None:
        return None
    if not (remove or replaced_path(run.dir).is_dir()):
        return None
    before = "before any step was complete" if run.completed == 0 else "with no checkpoint to resume from"
    if put_back(run.dir):
        return f"{before}: the new run is removed and the run it replaced is back in {run.dir}"
    return f"{before}: {run.dir} removed"


def _keep_on_interrupt(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
                       ) -> Path | None:
    """A checkpoint of step `run.completed` (written now unless it is on disk or cannot be exact), else the last."""
    last = latest_checkpoint(run.dir / "checkpoints")
    written = checkpoint_steps(run.dir / "checkpoints")
    if run.d.enabled or run.updating > run.completed or run.completed == 0 or (written and written[-1] >= run.completed):
        return last
    set_rng_state(run.rng)  # as they were after the step, as an uninterrupted run's checkpoint holds them
    return save_checkpoint(run.dir / "checkpoints", run.completed, model, optimizer, scheduler,
                           {"world_size": 1, "total_steps": run.total_steps, "recipe": run.state}, 0,
                           run.cfg.keep_checkpoints)


def resume_command(run: Run) -> str:
    """The command that continues this run (its saved config supplies every other option)."""
    launcher = f"torchrun --nproc-per-node {run.d.world_size} -m posttrain" if run.d.enabled else "posttrain"
    where = [] if run.cfg.output_dir == RunConfig.output_dir else ["--run.output-dir", shlex.quote(run.cfg.output_dir)]
    return " ".join([launcher, run.label, *where, "--run.name", shlex.quote(run.cfg.name), "--run.resume"])


def finish_run(run: Run, model: torch.nn.Module, tokenizer: Any,
               save: Callable[[torch.nn.Module, Path], Any] | None = None) -> Path:
    """Close metrics and progress; write final/ (merged LoRA, loadable by plain transformers), atomically: a run
    with final/ is finished (`run_finished`). `save(plain, out)` writes the model: `plain` is the trained module
    without DDP's wrapper, gathered whole when it was sharded (`models.sharding.full_model`)."""
    run.bar.close()
    run.sink.log(run.total_steps, {"time/train_seconds": time.perf_counter() - run.t0,
                                   "time/checkpoint_seconds": run.checkpoint_seconds})
    run.sink.close()
    plain = full_model(unwrap(model), run.d.is_main)  # every process takes part in gathering a sharded model
    if run.d.is_main:
        tmp, final = run.dir / ".tmp-final", run.dir / "final"
        shutil.rmtree(tmp, ignore_errors=True)
        (save or (lambda m, out: save_pretrained_merged(m, tokenizer, out)))(plain, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    return run.dir
