"""RewardFunction: a saved reward model as `reward(prompt, completion) -> float`, batched by length, reading
exactly the tokens the reward-model recipe trains on."""

import pytest
import torch

from posttrain.config import ModelConfig
from posttrain.data.records import Message, Prompt
from posttrain.data.tokenize import reward_input_ids, tokenize_completion
from posttrain.errors import ModelError
from posttrain.models.heads import load_reward_model, save_reward_model
from posttrain.rewards.model import RewardFunction


@pytest.fixture(scope="module")
def saved_rm(tiny_dir, tmp_path_factory):
    """An untrained reward model (seeded head) saved in the recipe's format."""
    model, tokenizer = load_reward_model(ModelConfig(name=str(tiny_dir)), seed=5)
    return save_reward_model(model, tokenizer, tmp_path_factory.mktemp("rm") / "final",
                             {"kind": "bradley_terry", "pooling": "last_token"})


def prompts_and_completions() -> tuple[list[Prompt], list[str]]:
    prompts = [Prompt.from_dict({"prompt": f"What is {i} + {2 * i}?", "answer": 3 * i}) for i in range(5)]
    completions = ["#### 0", "The answer is three, because one plus two is three.", "#### 6", "9", "#### -12"]
    return prompts, completions


def test_batched_scores_equal_one_at_a_time_scores_in_input_order(saved_rm):
    prompts, completions = prompts_and_completions()
    reward = RewardFunction.load(saved_rm, batch_size=2)  # 5 rows of different lengths: 3 forwards
    batched = reward.score_batch(prompts, completions)
    single = [reward(p, c) for p, c in zip(prompts, completions)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert len(set(round(x, 4) for x in single)) == 5  # distinct values, so a shuffled order would show
    assert all(isinstance(x, float) for x in batched)


def test_scoring_reads_the_training_tokens(saved_rm):
    """The scored sequence is the chat-template conversation prompt + one assistant message, the same ids
    the recipe builds for a preference record's response."""
    reward = RewardFunction.load(saved_rm)
    prompt, completion = prompts_and_completions()[0][2], "#### 6"
    response = (Message("assistant", completion),)
    p_ids, c_ids = tokenize_completion(prompt.prompt, response, reward.tokenizer)
    assert reward.tokenize(prompt, completion).input_ids == p_ids + c_ids == reward_input_ids(
        prompt.prompt, response, reward.tokenizer)
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        direct = reward.model(ids, torch.ones_like(ids)).item()
    assert reward(prompt, completion) == pytest.approx(direct, abs=1e-6)


def test_a_causal_lm_is_not_a_reward_model(tiny_dir):
    with pytest.raises(ModelError, match="no reward head"):
        RewardFunction.load(tiny_dir)


def test_mismatched_lists_are_refused(saved_rm):
    prompts, completions = prompts_and_completions()
    with pytest.raises(ValueError, match="5 prompts but 4 completions"):
        RewardFunction.load(saved_rm).score_batch(prompts, completions[:4])


def test_rm_spec_resolves_to_the_reward_model_alone_or_in_a_sum(saved_rm):
    """`rm:PATH` is a RewardFunction named after its spec; in `numeric+0.5*rm:PATH` it is scored batched and
    the total is numeric + 0.5 * rm."""
    from posttrain.rewards.functions import resolve_reward
    from posttrain.rewards.score import score_completions

    alone = resolve_reward(f"rm:{saved_rm}", device="cpu")
    assert isinstance(alone, RewardFunction) and alone.name == f"rm:{saved_rm}"
    prompts, completions = prompts_and_completions()
    mixed = resolve_reward(f"numeric+0.5*rm:{saved_rm}", device="cpu")
    scores = score_completions(mixed, prompts, completions)
    rm_values = alone.score_batch(prompts, completions)
    assert scores.parts[f"rm:{saved_rm}"] == pytest.approx(rm_values, abs=1e-5)
    assert scores.parts["numeric"] == [1.0, 0.0, 1.0, 1.0, 0.0]  # 0, 3, 6, 9 right; "#### -12" is not 12
    assert scores.total == pytest.approx([n + 0.5 * r for n, r in zip(scores.parts["numeric"], rm_values)], abs=1e-5)


def test_rm_spec_with_a_missing_folder_is_a_model_error(tmp_path):
    from posttrain.errors import UserError
    from posttrain.rewards.functions import resolve_reward

    with pytest.raises(UserError):
        resolve_reward(f"rm:{tmp_path / 'nothing'}", device="cpu")
