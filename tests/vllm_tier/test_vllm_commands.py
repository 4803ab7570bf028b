"""`--sampler vllm` in the sampling commands: `generate` and `eval` give what the built-in sampler gives at greedy,
and `data pairs` writes its records. Run by scripts/test-vllm.sh in .venv-vllm; skipped where vLLM is not installed."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: scripts/test-vllm.sh runs this tier in .venv-vllm")

from posttrain.config import ModelConfig, SamplingParams  # noqa: E402
from posttrain.eval.suite import SuiteConfig, run_suite  # noqa: E402
from posttrain.generate import GenerateConfig, generate  # noqa: E402
from posttrain.pairs import PairsConfig, make_pairs  # noqa: E402


def test_generate_greedy_is_the_same_with_vllm(tmp_path):
    rows = {sampler: generate(GenerateConfig(model=ModelConfig(name="tiny"), limit=4, progress=False, sampler=sampler,
                                             sampling=SamplingParams(max_new_tokens=8, temperature=0.0),
                                             output=str(tmp_path / f"{sampler}.jsonl")))
            for sampler in ("builtin", "vllm")}
    assert rows["vllm"] == rows["builtin"] and len(rows["vllm"]) == 4


def test_eval_of_two_models_with_vllm_matches_the_builtin_sampler(tmp_path):
    """Two models, one engine each in turn (the first is freed before the second starts): the same samples."""
    samples = {}
    for sampler in ("builtin", "vllm"):
        out = tmp_path / sampler
        run_suite(SuiteConfig(models=("tiny", "tiny-small"), limit=6, progress=False, sampler=sampler,
                              sampling=SamplingParams(max_new_tokens=8, temperature=0.0), output_dir=str(out),
                              bootstrap_resamples=100))
        samples[sampler] = [(r["model"], r["completion"], r["finish_reason"])
                            for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())]
    assert samples["vllm"] == samples["builtin"] and len(samples["vllm"]) == 12


def test_data_pairs_samples_with_vllm(tmp_path):
    stats = make_pairs(PairsConfig(output=str(tmp_path / "pairs.jsonl"), model=ModelConfig(name="tiny"), limit=16, k=4,
                                   rater="concise", progress=False, sampler="vllm",
                                   sampling=SamplingParams(max_new_tokens=8, temperature=1.0)))
    assert stats.prompts == 16 and stats.written >= 1
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == stats.written
