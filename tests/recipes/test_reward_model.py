"""Reward-model recipe: the group loss, a few steps on the tiny model (pairs and K=3 rankings), the saved
model scored by RewardFunction, bad inputs stopped with one-line errors, and an outcome run that learns."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain.cli import main as cli_main
from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from posttrain.data.rankings import RankedGroup, group_batch
from posttrain.data.records import Message, Prompt
from posttrain.data.splits import split_by_key
from posttrain.errors import ConfigError, DataError
from posttrain.losses.reward import ranking_loss
from posttrain.recipes.reward_model import RewardModelConfig, rm_step_loss, train
from posttrain.rewards.model import RewardFunction

WORDS = "the a is of and so then because good bad yes no hello thanks".split()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    """chosen = the correct answer in worked form; rejected = its negation or a short ramble."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 40), rng.randint(0, 40)
        ramble = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        rejected = f"#### -{a + b + 1}" if i % 2 else ramble
        rows.append({"prompt": f"What is {a} + {b}?", "chosen": f"#### {a + b}", "rejected": rejected})
    return rows


def ranking_rows(n: int) -> list[dict]:
    """Three responses per prompt, listed worst first; order names them best first."""
    return [{"prompt": f"What is {i} + 1?", "responses": ["no", f"{i + 1} maybe", f"#### {i + 1}"],
             "order": [2, 1, 0]} for i in range(n)]


def cfg_for(tmp: Path, train_file: Path, name: str, **overrides) -> RewardModelConfig:
    optim = {"lr": 1e-3, "warmup_steps": 1, "max_steps": 8, "batch_size": 8, **overrides.pop("optim", {})}
    return RewardModelConfig(
        model=overrides.pop("model", ModelConfig(name="tiny")),
        data=DataConfig(train=str(train_file), max_length=48, eval_fraction=overrides.pop("eval_fraction", 0.1),
                        **overrides.pop("data", {})),
        optim=OptimConfig(**optim),
        run=RunConfig(name=name, output_dir=str(tmp), progress=False, log_every=1),
        **overrides,
    )


def logged(run_dir: Path, key: str) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


# -- math tier -----------------------------------------------------------------------------------


def test_group_loss_averages_its_pairs_and_subtracts_the_margin():
    """rewards [0, 2, 1] ranked [1, 2, 0]: pairs (1,2),(1,0),(2,0) with gaps 1, 2, 1 -> the mean of
    -log σ over them, (2·0.313262 + 0.126928) / 3 = 0.251151. A pair with margin 1 and gap 2 costs
    -log σ(2 - 1) = 0.3133."""
    rewards = torch.tensor([0.0, 2.0, 1.0])
    loss, m = ranking_loss(rewards, (1, 2, 0), None, 0.0)
    assert loss.item() == pytest.approx(0.251151, abs=1e-6)
    assert m["accuracy"] == 1.0 and m["margin"].item() == pytest.approx(4 / 3)
    loss, _ = ranking_loss(torch.tensor([2.0, 0.0]), (0, 1), 1.0, 0.0)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))), abs=1e-6)


def test_step_loss_sums_over_groups_and_counts_pairs():
    """A fake model returning fixed rewards: group 1 (a pair, rewards 1, 0) costs -log σ(1) = 0.3133 and is
    right; group 2 (K=3, rewards 0, 0, 0) costs log 2 = 0.6931 per pair, none right. Sum 1.0064;
    pairs 1 + 3 = 4; correct 1."""
    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])

    groups = [RankedGroup((), ((1, 2), (1, 3)), (0, 1)), RankedGroup((), ((1,), (2,), (3, 4)), (2, 0, 1))]
    batch = group_batch(groups, [0, 1], 0, torch.device("cpu"), use_margin=False)
    assert batch.input_ids.shape == (5, 2) and batch.count == 2
    loss, sums = rm_step_loss(Fixed(), batch)
    assert loss.item() == pytest.approx(0.31326 + 0.69315, abs=1e-4)
    assert sums["pairs"] == 4 and float(sums["correct"]) == 1.0 and sums["responses"] == 5


def test_held_out_prompts_never_appear_in_training():
    groups = [RankedGroup((Message("user", str(i % 10)),), ((1,), (2,)), (0, 1)) for i in range(40)]
    keys = [g.prompt for g in groups]
    train_part, held = split_by_key(groups, keys, 0.2, seed=0)
    assert {g.prompt for g in held} & {g.prompt for g in train_part} == set()
    assert len({g.prompt for g in held}) == 2 and len(held) == 8  # 20% of 10 prompts, 4 groups each
    assert split_by_key(groups, keys, 0.2, seed=0) == (train_part, held)


# -- recipe tier ---------------------------------------------------------------------------------


def test_pairs_train_save_and_score_in_batches(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(80))
    run = train(cfg_for(tmp_path, data, "pairs"))
    losses = logged(run, "train/loss")
    assert all(math.isfinite(x) for x in losses) and len(losses) == 8
    assert sum(losses[-3:]) / 3 < losses[0]
    assert set(logged(run, "train/pairs_per_group")) == {1.0}
    assert logged(run, "eval/accuracy") and logged(run, "eval/loss")
    assert json.loads((run / "final" / "reward_model.json").read_text()) == {"kind": "bradley_terry",
                                                                             "pooling": "last_token"}
    final = load_file(str(run / "final" / "model.safetensors"))
    base = load_file(str(tiny_dir / "model.safetensors"))
    assert not torch.equal(final["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    reward = RewardFunction.load(run / "final", batch_size=3)
    rows = pair_rows(6, seed=1)
    prompts = [Prompt.from_dict({"prompt": r["prompt"]}) for r in rows for _ in (0, 1)]
    completions = [c for r in rows for c in (r["chosen"], r["rejected"])]
    assert reward.score_batch(prompts, completions) == pytest.approx(
        [reward(p, c) for p, c in zip(prompts, completions)], abs=1e-5)


def test_rankings_of_three_train_with_three_pairs_per_group(tmp_path):
    data = write_jsonl(tmp_path / "ranks.jsonl", ranking_rows(24))
    run = train(cfg_for(tmp_path, data, "ranks", eval_fraction=0.25, optim={"max_steps": 3, "batch_size": 4}))
    assert set(logged(run, "train/pairs_per_group")) == {3.0}
    assert set(logged(run, "eval/pairs_per_group")) == {3.0}
    assert all(math.isfinite(x) for x in logged(run, "train/loss"))


def test_margin_on_data_without_margins_is_warned_of(tmp_path, capsys):
    """--margin on rankings (which carry none) or pairs without a `margin` field would change nothing unsaid."""
    data = write_jsonl(tmp_path / "ranks.jsonl", ranking_rows(16))
    train(cfg_for(tmp_path, data, "m", eval_fraction=0.25, margin=True, optim={"max_steps": 1, "batch_size": 4}))
    assert "warning: --margin: 0 of 12 training groups carry a margin" in capsys.readouterr().err


def test_lora_trains_the_head_and_saves_a_merged_model(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(16))
    cfg = cfg_for(tmp_path, data, "lora", model=ModelConfig(name="tiny", lora_r=4), eval_fraction=0.0,
                  optim={"max_steps": 2})
    run = train(cfg)
    assert not (run / "final" / "adapter_config.json").exists()
    final = load_file(str(run / "final" / "model.safetensors"))
    assert final["score.weight"].shape == (1, 128)
    assert RewardFunction.load(run / "final")(Prompt.from_dict({"prompt": "What is 1 + 1?"}), "#### 2") != 0.0


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    """8 groups per step as 1x8 or 4x2: the loss is the mean over the step's groups either way."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(16))
    one = train(cfg_for(tmp_path, data, "one", eval_fraction=0.0, optim={"max_steps": 2}))
    four = train(cfg_for(tmp_path, data, "four", eval_fraction=0.0, optim={"max_steps": 2, "batch_size": 2,
                                                                            "grad_accum": 4}))
    a, b = load_file(str(one / "final" / "model.safetensors")), load_file(str(four / "final" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=2e-5, rtol=1e-4)


def test_resume_from_a_checkpoint_gives_the_uninterrupted_weights(tmp_path):
    """Run 4 steps with a checkpoint at step 2, then resume that run from step 2 (--run.resume-from): the final
    weights equal those of a run never resumed."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(24))
    straight = train(cfg_for(tmp_path, data, "straight", optim={"max_steps": 4, "batch_size": 4}))
    cfg = cfg_for(tmp_path, data, "resumed", optim={"max_steps": 4, "batch_size": 4})
    cfg.run.save_every = 2
    run = train(cfg)
    cfg.run.resume_from = str(run / "checkpoints" / "step-2")
    resumed = train(cfg)
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- bad input -----------------------------------------------------------------------------------


def test_duplicate_ranking_positions_stop_with_one_line(tmp_path):
    rows = ranking_rows(3)
    rows[1]["order"] = [2, 2, 0]
    data = write_jsonl(tmp_path / "ranks.jsonl", rows)
    with pytest.raises(DataError) as e:
        train(cfg_for(tmp_path, data, "bad"))
    assert str(e.value) == (f"{data}:2: field \"order\" must be a permutation of 0..2: response indices given twice [2]; "
                            "response indices missing [1] (--data.invalid skip drops invalid rows and says how many)")
    assert not (tmp_path / "bad").exists()


def test_chosen_equal_to_rejected_is_refused(tmp_path):
    rows = pair_rows(3)
    rows[2]["rejected"] = rows[2]["chosen"]
    with pytest.raises(DataError, match=r"pairs.jsonl:3: .*identical to chosen"):
        train(cfg_for(tmp_path, write_jsonl(tmp_path / "pairs.jsonl", rows), "bad"))


def test_a_row_longer_than_max_length_is_named_or_skipped(tmp_path):
    rows = pair_rows(20)
    rows[4]["prompt"] = "What is " + " plus ".join(str(i) for i in range(30)) + "?"
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match=r"pairs.jsonl:5: .* more than data.max_length=48"):
        train(cfg_for(tmp_path, data, "bad"))
    run = train(cfg_for(tmp_path, data, "skip", data={"truncation": "skip"}, eval_fraction=0.0,
                        optim={"max_steps": 1, "batch_size": 19}))
    assert (run / "final" / "model.safetensors").exists()


def test_config_mistakes_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="truncation"):
        cfg_for(tmp_path, tmp_path / "x.jsonl", "bad", data={"truncation": "truncate"})
    with pytest.raises(ConfigError, match="eval_fraction"):
        cfg_for(tmp_path, tmp_path / "x.jsonl", "bad", eval_fraction=1.0)
    assert cli_main(["rm", "--data.train", "", "--run.output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("posttrain rm: error: data.train is empty: pass --data.train PAIRS.jsonl "
                   "(make one with posttrain data pairs)")


# -- outcome tier --------------------------------------------------------------------------------


@pytest.mark.slow
def test_held_out_accuracy_reaches_90_percent(tmp_path):
    """Correct worked answers over negated ones or rambles, judged on prompts never trained on."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(400))
    run = train(cfg_for(tmp_path, data, "outcome", eval_fraction=0.2, optim={"max_steps": 20, "batch_size": 16}))
    assert logged(run, "eval/accuracy")[-1] >= 0.9


def test_the_embedded_default_trains_on_the_builtin_pairs(tmp_path, capsys):
    """`posttrain rm` with no data option trains on builtin:arithmetic-pairs and holds out its own split."""
    assert cli_main(["rm", "--optim.max-steps", "3", "--data.limit", "48", "--run.output-dir", str(tmp_path)]) == 0
    lineage = json.loads((tmp_path / "rm" / "lineage.json").read_text())
    assert json.dumps(lineage).count("builtin:arithmetic-pairs") >= 2
    assert "held-out pair accuracy" in capsys.readouterr().out
