"""posttrain eval against EleutherAI's lm-evaluation-harness on the same prompts: equal accuracy, and the speed.

    python bench/eval.py            # 2 tiny models x 500 held-out prompts, SmolLM2 x 200 at batch 64 and 200;
                                    # writes bench/RESULTS.md
    python bench/eval.py --quick    # 8 prompts per model and 4 for SmolLM2, one run each, nothing written

Both sides evaluate the same JSONL (the built-in arithmetic task's held-out prompts, written once to a temporary
file) with the same model directory: the prompt as one user message through the model's chat template, greedy
decoding, at most `max_new_tokens` new tokens, the same stop string, fp32 on the CPU, the same batch size, and
the same score: exact match of the completion's last integer with the reference answer (SmolLM2 answers in
sentences, "86 + 87 = 173."). lm-eval reads the file as a local YAML task (`dataset_path: json`,
`output_type: generate_until`, `--apply_chat_template`), takes the last integer with its `regex` filter and
scores it with its own `exact_match` metric; posttrain scores with `last_integer_match` below, a
`module:function` reward with the same regular expression. The accuracies must agree exactly (the bench fails
otherwise), and the completions are compared prompt by prompt too.

Timed: the whole evaluation of one model on each side, model loading included, as a user waits for it, after
an untimed warm-up of the imports both sides share
(`run_suite` for posttrain, which also computes its intervals and writes its files; `simple_evaluate` for lm-eval);
runs alternate (posttrain, lm-eval, posttrain, ...) so that load from other processes hits both alike; medians.
Both sides run in this one process under the allocator policy posttrain's sampling commands set for their
process (`posttrain.cpu.keep_freed_memory`, set once before the first run), so neither gains from it alone.
lm-eval is a bench dependency only (`pip install -e .[bench]`), never a runtime one.

Model work: one more, untimed run per side counts the token slots each side pushed through the model (forward
pre-hooks on the input embedding, which sees every slot of the decoder body, padding included, and on the LM
head), turns them into matmul FLOPs (2 x weights per slot; attention over these short contexts adds under 2%)
and sets them against the CPU's measured fp32 matmul peak. posttrain's FLOPs at that peak are the least time
its own work could take, so lm-eval's median time over it bounds the speed-up any implementation of
posttrain's work could show at this precision on this CPU.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import flop_params, machine_line, matmul_peak_gflops, update_results  # noqa: E402

from posttrain.config import ModelConfig, SamplingParams  # noqa: E402
from posttrain.cpu import keep_freed_memory  # noqa: E402
from posttrain.data.load import load_records  # noqa: E402
from posttrain.data.records import Prompt  # noqa: E402
from posttrain.eval.suite import SuiteConfig, run_suite  # noqa: E402
from posttrain.models.load import resolve_model_dir  # noqa: E402

TASK_NAME = "posttrain_bench_arithmetic"
STOP = "\n\n"  # both sides end a completion here (lm-eval's `until`, posttrain's --sampling.stop)


@dataclass
class BenchConfig:
    """posttrain eval vs lm-evaluation-harness: the same prompts, the same accuracy, the speed ratio."""

    models: tuple[str, ...] = ("tiny", "tiny-small")
    """The small models (built-in names or trained runs' final/ directories)."""
    prompts: int = 500
    """Held-out prompts for each small model."""
    smollm2_prompts: int = 200
    """Held-out prompts for SmolLM2-135M-Instruct; 0 leaves it out."""
    max_new_tokens: int = 32
    """Most new tokens per completion, both sides."""
    batch_size: int = 64
    """Prompts generated together, both sides."""
    smollm2_batch_sizes: tuple[int, ...] = (64, 200)
    """Batch sizes SmolLM2 is evaluated at, both sides (one row each); 200 puts all its prompts in one batch."""
    count_work: bool = True
    """One more, untimed run per side and row that counts the model's token slots and FLOPs."""
    repeats: int = 3
    """Runs per side and model, alternating; the table shows medians."""
    quick: bool = False
    """A quick look: 8 prompts per small model, 4 for SmolLM2, one run each, nothing written."""
    write: bool = True
    """Write the results into bench/RESULTS.md."""


LAST_INTEGER = r"(-?\d+)"


def last_integer_match(prompt: Prompt, completion: str) -> float:
    """1.0 when the completion's last integer is the reference answer: what lm-eval's regex filter (last match)
    and exact_match compute."""
    numbers = re.findall(LAST_INTEGER, completion)
    return float(bool(numbers) and numbers[-1] == str(prompt.reference["answer"]))


def write_task(folder: Path, n: int, max_new_tokens: int) -> Path:
    """The held-out prompts as JSONL (a message list for posttrain, the same text for lm-eval) and the YAML task."""
    prompts = load_records("builtin:arithmetic/heldout", accept=(Prompt,), limit=n)
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p.text}], "question": p.text,
                                        "answer": str(p.reference["answer"])}) + "\n" for p in prompts))
    # lm-eval's regex filter keeps the match that group_select names (-1: the last); no match gives "[invalid]".
    (folder / f"{TASK_NAME}.yaml").write_text(f"""task: {TASK_NAME}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs:
  until: [{json.dumps(STOP)}]
  max_gen_toks: {max_new_tokens}
  do_sample: false
  temperature: 0.0
filter_list:
  - name: last_integer
    filter:
      - function: regex
        regex_pattern: {json.dumps(LAST_INTEGER)}
        group_select: -1
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    return data


@dataclass
class Work:
    """The model work of one evaluation: token slots through the decoder body and through the LM head."""

    body_slots: int = 0
    head_slots: int = 0
    body_params: int = 0
    """Matmul weights of the decoder body (`flop_params` less the LM head)."""
    head_params: int = 0

    @property
    def gflop(self) -> float:
        return 2 * (self.body_slots * self.body_params + self.head_slots * self.head_params) / 1e9


@contextmanager
def counting_work() -> Iterator[Work]:
    """Count the slots every causal LM's forward computes while the block runs, whoever calls it.

    A global forward pre-hook sees each module call: at a model with an LM head it marks that model's input
    embedding and head, and the marked modules add their inputs' token slots when they run."""
    work = Work()

    def hook(module: torch.nn.Module, args: tuple) -> None:
        role = getattr(module, "_bench_role", None)
        if role == "body":
            work.body_slots += args[0].numel()  # input ids (B, T)
        elif role == "head":
            work.head_slots += args[0].numel() // args[0].shape[-1]  # hidden states (B, T', d)
        elif hasattr(module, "get_output_embeddings") and getattr(module, "lm_head", None) is not None:
            head = module.get_output_embeddings()
            module.get_input_embeddings()._bench_role, head._bench_role = "body", "head"
            work.head_params = head.weight.numel()
            work.body_params = flop_params(module) - work.head_params

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield work
    finally:
        handle.remove()


def run_posttrain(model: str, data: Path, cfg: BenchConfig, out: Path, batch_size: int
                  ) -> tuple[float, float, list[str]]:
    """(seconds, accuracy, completions) of one `posttrain eval` of `model`, loading included."""
    suite = SuiteConfig(models=(model,), tasks=(str(data),), reward=f"{__name__}:last_integer_match",
                        sampling=SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens, stop=(STOP,)),
                        batch_size=batch_size, device="cpu", progress=False, output_dir=str(out),
                        model=ModelConfig(name=model, dtype="float32"))
    t0 = time.perf_counter()
    results = run_suite(suite)
    seconds = time.perf_counter() - t0
    completions = [json.loads(line)["completion"] for line in (out / "samples.jsonl").read_text().splitlines()]
    return seconds, results["accuracy"][0]["value"], completions


def run_lm_eval(model: str, folder: Path, batch_size: int) -> tuple[float, float, list[str]]:
    """(seconds, accuracy, completions) of one lm-eval `simple_evaluate` of `model`, loading included."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={resolve_model_dir(model)},dtype=float32", tasks=[TASK_NAME],
        task_manager=TaskManager(include_path=str(folder)), apply_chat_template=True, batch_size=batch_size,
        device="cpu", log_samples=True)
    seconds = time.perf_counter() - t0
    samples = sorted(results["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    completions = [s["resps"][0][0] for s in samples]
    return seconds, results["results"][TASK_NAME]["exact_match,last_integer"], completions


@dataclass
class Row:
    model: str
    prompts: int
    batch_size: int
    posttrain_seconds: list[float]
    lm_eval_seconds: list[float]
    posttrain_accuracy: float
    lm_eval_accuracy: float
    same_completions: int
    posttrain_work: Work | None = None
    lm_eval_work: Work | None = None

    @property
    def ratio(self) -> float:
        return statistics.median(self.lm_eval_seconds) / statistics.median(self.posttrain_seconds)


def bench_model(model: str, n: int, batch_size: int, cfg: BenchConfig, tmp: Path) -> Row:
    folder = tmp / f"{model.replace('/', '_')}-{n}-{batch_size}"
    folder.mkdir()
    data = write_task(folder, n, cfg.max_new_tokens)
    resolve_model_dir(model)  # untimed: builds a tiny model or converts SmolLM2's GGUF once, for both sides
    ours, theirs, accuracy, completions = [], [], {}, {}
    for i in range(cfg.repeats):
        seconds, accuracy["posttrain"], completions["posttrain"] = run_posttrain(model, data, cfg, folder / f"out{i}",
                                                                                 batch_size)
        ours.append(seconds)
        seconds, accuracy["lm_eval"], completions["lm_eval"] = run_lm_eval(model, folder, batch_size)
        theirs.append(seconds)
        print(f"{model} x {n}, batch {batch_size}: posttrain {ours[-1]:.1f} s, lm-eval {theirs[-1]:.1f} s", flush=True)
    same = sum(a.strip() == b.strip() for a, b in zip(completions["posttrain"], completions["lm_eval"]))
    row = Row(model, n, batch_size, ours, theirs, accuracy["posttrain"], accuracy["lm_eval"], same)
    if cfg.count_work:
        with counting_work() as row.posttrain_work:
            run_posttrain(model, data, cfg, folder / "out-count", batch_size)
        with counting_work() as row.lm_eval_work:
            run_lm_eval(model, folder, batch_size)
    return row


def markdown(rows: list[Row], cfg: BenchConfig, before: str, after: str, peak: float) -> str:
    lines = [
        f"`.venv/bin/python bench/eval.py` ({time.strftime('%Y-%m-%d %H:%M')}): held-out 2-digit arithmetic prompts "
        f"as one user message through each model's chat template, greedy, at most {cfg.max_new_tokens} new tokens, "
        "stop at a blank line, the same batch size on both sides, fp32 on the CPU; exact match of the last integer. "
        f"Seconds = one whole evaluation of one model, loading included; {cfg.repeats} alternating runs per side, "
        "medians.", "", f"- machine before: {before}", f"- machine after: {after}", "",
        "| model | prompts | batch | posttrain s (median) | lm-eval s (median) | posttrain ÷ lm-eval time "
        "| posttrain accuracy | lm-eval accuracy | same completions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.model} | {r.prompts} | {r.batch_size} | {statistics.median(r.posttrain_seconds):.1f} | "
                     f"{statistics.median(r.lm_eval_seconds):.1f} | **{r.ratio:.2f}x faster** | "
                     f"{r.posttrain_accuracy:.4f} | {r.lm_eval_accuracy:.4f} | {r.same_completions}/{r.prompts} |")
    counted = [r for r in rows if r.posttrain_work and r.lm_eval_work]
    if counted:
        lines += [
            "", f"Model work (one more, untimed run per side and row; module docstring). Slots = token positions "
            "through the decoder body (padding included) and through the LM head; GFLOP = 2 x matmul weights per "
            f"slot; the peak is a 2048^3 fp32 matmul on this CPU, {peak:.0f} GFLOP/s (the higher of before and "
            "after the runs). \"Bound\" = lm-eval's median time / posttrain's GFLOP at that peak: the speed-up "
            "posttrain's work would show if it cost nothing but its matmuls at the peak (no loading, no overhead).",
            "", "| model | batch | side | body slots | head slots | GFLOP | s at the peak | GFLOP/s over the median "
            "time (loading included) | bound on posttrain ÷ lm-eval |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in counted:
            bound = statistics.median(r.lm_eval_seconds) / (r.posttrain_work.gflop / peak)
            for side, work, seconds in (("posttrain", r.posttrain_work, r.posttrain_seconds),
                                        ("lm-eval", r.lm_eval_work, r.lm_eval_seconds)):
                lines.append(f"| {r.model} | {r.batch_size} | {side} | {work.body_slots:,} | {work.head_slots:,} | "
                             f"{work.gflop:,.1f} | {work.gflop / peak:.2f} | "
                             f"{work.gflop / statistics.median(seconds):.0f} | "
                             f"{f'{bound:.2f}x' if side == 'posttrain' else ''} |")
    return "\n".join(lines)


def warm_up_imports() -> None:
    """Untimed: import lm-eval's HF model and load one Llama through transformers, so that neither side's first
    timed run pays the one-off imports (~10 s of transformers modules) the other side then gets for free."""
    import lm_eval.models.huggingface  # noqa: F401
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(resolve_model_dir("tiny"))


def main(cfg: BenchConfig) -> int:
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    if cfg.quick:
        cfg.prompts, cfg.smollm2_prompts, cfg.repeats, cfg.write = 8, min(cfg.smollm2_prompts, 4), 1, False
        cfg.smollm2_batch_sizes = cfg.smollm2_batch_sizes[:1]
    keep_freed_memory()  # what `posttrain eval` does first; process-wide, so lm-eval runs under it too
    warm_up_imports()
    plan = [(m, cfg.prompts, cfg.batch_size) for m in cfg.models]
    plan += [("smollm2", cfg.smollm2_prompts, b) for b in cfg.smollm2_batch_sizes if cfg.smollm2_prompts]
    before, peak = machine_line(), matmul_peak_gflops()
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-eval-") as tmp:
        rows = [bench_model(model, n, batch_size, cfg, Path(tmp)) for model, n, batch_size in plan]
    after, peak = machine_line(), max(peak, matmul_peak_gflops())
    text = markdown(rows, cfg, before, after, peak)
    print(text)
    if cfg.write:
        update_results("eval: posttrain eval vs lm-evaluation-harness", text)
    disagree = [r.model for r in rows if r.posttrain_accuracy != r.lm_eval_accuracy]
    if disagree:
        print(f"accuracies differ for {', '.join(disagree)}: see the completions above", file=sys.stderr)
    return 1 if disagree else 0


if __name__ == "__main__":
    import tyro

    sys.exit(main(tyro.cli(BenchConfig)))
