"""Outcome tier: the demo's whole loop on the tiny model must show learning at every stage.

One run of `posttrain demo` (the same function `make demo` calls), then its headline numbers:
SFT held-out accuracy on 2-digit addition, reward-model held-out accuracy on rater-labelled pairs
(0% noise), the DPO policy's win rate against its SFT start, judged by the same rater, and GRPO's
held-out accuracy from an SFT checkpoint that still got only 15-30% right. RLOO then trains from that same
checkpoint and must improve it too. PPO from the SFT policy against the demo's reward model must raise the reward
model's held-out score within the stage's KL budget and win against SFT by the rater that made the pairs.
"""

import json

import pytest

from posttrain.demo import PPO_KL_BUDGET, DemoConfig, run_demo

pytestmark = pytest.mark.slow
RLOO_STEPS, RLOO_LR = 150, 3e-4  # from the 22.5% start: 52% after 150 steps (measured)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    results = run_demo(DemoConfig(output_dir=str(out), progress=False))
    return out, {r.stage: r for r in results}


def _stage(results, prefix):
    return next(r for name, r in results.items() if name.startswith(prefix))


def test_sft_reaches_90_percent_on_heldout_addition(demo):
    _, results = demo
    assert _stage(results, "Eval: SFT").value >= 0.90


def test_reward_model_heldout_accuracy_at_least_90_percent(demo):
    _, results = demo
    assert _stage(results, "Reward model").value >= 0.90


def test_dpo_policy_wins_70_percent_against_its_sft_start(demo):
    _, results = demo
    assert _stage(results, "Win rate: DPO").value >= 0.70


def test_ppo_raises_the_reward_model_score_within_its_kl_budget(demo):
    _, results = demo
    outcome = _stage(results, "PPO from").detail
    before, after = outcome.before, outcome.after
    assert before["step"] == 0 and before["eval/kl"] == pytest.approx(0.0, abs=1e-3)
    assert after["eval/proxy_score"] > before["eval/proxy_score"] + 0.5, (before, after)
    assert 0 < after["eval/kl"] <= PPO_KL_BUDGET, after


def test_ppo_policy_wins_65_percent_against_sft(demo):
    _, results = demo
    assert _stage(results, "Win rate: PPO").value >= 0.65


def test_dpo_keeps_the_task_solved(demo):
    _, results = demo
    assert _stage(results, "Eval: DPO").value >= 0.85


def test_every_stage_left_a_complete_run_directory(demo):
    out, _ = demo
    for name in ("sft", "rm", "dpo", "ppo"):
        run = out / name
        assert (run / "final" / "config.json").is_file()
        lineage = json.loads((run / "lineage.json").read_text())
        assert lineage["data"] and lineage["code"]["posttrain"]
    assert (out / "pairs" / "pairs.jsonl").stat().st_size > 0


def test_people_rank_the_versions_and_a_reward_model_learns_their_judgments(demo):
    """The feedback stage: simulated raters judging the four policies two at a time over HTTP put the two that
    answer with the bare number (DPO, PPO: the win-rate stages' winners) above SFT's chatty answers, and SFT's
    always-right answers above GRPO's (~78% right); a reward model trained on their exported judgments predicts
    held-out ones at >= 80%. Measured: 85.1%, and 84-91% over seeds 0-2 on another run's policies. The raters'
    10% random answers cap it near 95%, and its misses are mostly on pairs with a wrong GRPO answer, where the
    tiny model has to check the sum. Issue 14's 85% round-trip bar is tested on a campaign built for it in
    tests/feedback/test_loop.py."""
    _, results = demo
    judged = _stage(results, "Feedback:").detail
    ranked = [row.model for row in sorted(judged.leaderboard, key=lambda r: -r.rating)]
    assert set(ranked[:2]) == {"dpo", "ppo"} and ranked[2:] == ["sft", "grpo"], ranked
    assert _stage(results, "Reward model on the exported").value >= 0.80


def test_grpo_takes_a_weak_sft_checkpoint_to_60_percent(demo):
    """Issue 10's outcome: from an SFT checkpoint with 15-30% held-out accuracy to >= 60%."""
    _, results = demo
    outcome = _stage(results, "GRPO").detail
    assert 0.15 <= outcome.before <= 0.30, outcome
    assert outcome.after >= 0.60, outcome


def test_rloo_improves_the_weak_checkpoint_too(demo):
    from posttrain.config import ModelConfig, OptimConfig, RunConfig, SamplingParams
    from posttrain.demo import HELDOUT, TASK
    from posttrain.recipes.rloo import RLOOConfig, train
    from posttrain.rl.setup import PromptDataConfig, RLConfig
    from posttrain.training.metrics import read_metrics

    out, results = demo
    run_dir = train(RLOOConfig(
        model=ModelConfig(name=str(out / "sft-weak" / "final")),
        data=PromptDataConfig(train=TASK, eval=HELDOUT, eval_prompts=200),
        sampling=SamplingParams(max_new_tokens=24, temperature=1.0, stop=(".",)),  # the demo's GRPO stage's
        optim=OptimConfig(lr=RLOO_LR, warmup_steps=10, max_steps=RLOO_STEPS),
        run=RunConfig(name="rloo", output_dir=str(out), progress=False, log_every=10),
        rl=RLConfig(reward="numeric"),
    ))
    accuracy = [m["eval/accuracy"] for m in read_metrics(run_dir) if "eval/accuracy" in m]
    assert accuracy[0] == pytest.approx(_stage(results, "GRPO").detail.before)  # the same start, the same prompts
    assert accuracy[-1] >= accuracy[0] + 0.15, accuracy
