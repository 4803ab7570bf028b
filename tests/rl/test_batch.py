"""The update's layouts: one row per group with a block mask gives the log-probs and gradients of one row per
completion, and both equal a plain forward over [prompt, completion]; so do the LM head trimmed to the scored
positions' span and the last decoder layer at the scored positions only (`HEADS`)."""

import pytest
import torch

from posttrain.rl.batch import completion_logps, rollout_batch

# how far down the forward runs only where tokens are scored: nowhere, the LM head from the first scored position
# on, the whole last decoder layer at the scored positions alone (models/last_layer.py)
HEADS = {"full": {}, "trim": {"trim_logits": True}, "last": {"last_layer": True}}


def groups():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (7, 3)]
    completions = [[torch.randint(5, 200, (n,), generator=g).tolist() for n in lens] for lens in ((4, 1, 6), (2, 5, 3))]
    old = [[torch.zeros(len(c)) for c in group] for group in completions]
    adv = [[0.5, -1.0, 0.25], [1.0, 0.0, -0.5]]
    idx = [[0, 1, 2], [3, 4, 5]]
    return prompts, completions, old, adv, idx


def plain_logps(model, prompt, completion):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].float()
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return torch.log_softmax(logits, -1)[positions, torch.tensor(completion)]


def plain_entropy(model, prompt, completion):
    """The entropy of the distribution each completion token was drawn from, by a plain forward."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].float()
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return torch.distributions.Categorical(logits=logits[positions]).entropy()


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("head", HEADS)
def test_logps_equal_a_forward_per_completion(model, share, head):
    prompts, completions, old, adv, idx = groups()
    b = rollout_batch(prompts, completions, old, adv, idx, 0, torch.device("cpu"), share, **HEADS[head])
    assert (b.positions is not None) == (head == "last")
    with torch.no_grad():
        logps, entropy = completion_logps(model, b, with_entropy=True)
    assert logps.shape == b.mask.shape == (6, 6) and b.completions == [0, 1, 2, 3, 4, 5]
    flat = [(g, k) for g in range(2) for k in range(3)]
    for c, (g, k) in enumerate(flat):
        n = len(completions[g][k])
        # equal up to float32 rounding: the trimmed LM head runs a matmul of another shape, whose blocking differs
        # by CPU (log-probs near -10 differ by ~1e-5 there, a relative 1e-6)
        torch.testing.assert_close(logps[c, :n], plain_logps(model, prompts[g], completions[g][k]), atol=1e-5,
                                   rtol=1e-5)
        torch.testing.assert_close(entropy[c, :n], plain_entropy(model, prompts[g], completions[g][k]), atol=1e-5,
                                   rtol=1e-5)
        assert b.mask[c].sum() == n and (logps[c, n:] == 0).all()
    assert b.advantages.tolist() == [0.5, -1.0, 0.25, 1.0, 0.0, -0.5]
    if share:  # each prompt once per group
        assert b.n_input == sum(map(len, prompts)) + sum(len(c) for group in completions for c in group)


def test_shared_prompt_gradient_equals_one_row_per_completion(model):
    prompts, completions, old, adv, idx = groups()
    grads = []
    for share, head in ((True, "full"), (False, "full"), (True, "last"), (False, "last")):
        model.zero_grad()
        b = rollout_batch(prompts, completions, old, adv, idx, 0, torch.device("cpu"), share, **HEADS[head])
        logps, _ = completion_logps(model, b)
        (logps * b.advantages[:, None]).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    for other in grads[1:]:
        torch.testing.assert_close(other, grads[0], atol=1e-5, rtol=1e-4)


def packing_groups():
    """Three groups whose spans (prompt + completions) are 18, 13 and 5 tokens: the last two share a row."""
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (7, 3, 2)]
    completions = [[torch.randint(5, 200, (n,), generator=g).tolist() for n in lens]
                   for lens in ((4, 1, 6), (2, 5, 3), (1, 2))]
    old = [[torch.zeros(len(c)) for c in group] for group in completions]
    adv = [[0.5, -1.0, 0.25], [1.0, 0.0, -0.5], [2.0, -2.0]]
    idx = [[0, 1, 2], [3, 4, 5], [6, 7]]
    return prompts, completions, old, adv, idx


@pytest.mark.parametrize("head", HEADS)
def test_packed_groups_see_nothing_of_each_other(model, head):
    prompts, completions, old, adv, idx = packing_groups()
    b = rollout_batch(prompts, completions, old, adv, idx, 0, torch.device("cpu"), True, **HEADS[head])
    assert b.inputs["input_ids"].shape == (2, 18)  # rows [group 0] and [group 1, group 2], no wider than group 0
    with torch.no_grad():
        logps, _ = completion_logps(model, b)
    flat = [(g, k) for g in range(3) for k in range(len(completions[g]))]
    assert b.completions == list(range(8))
    for c, (g, k) in enumerate(flat):
        n = len(completions[g][k])
        torch.testing.assert_close(logps[c, :n], plain_logps(model, prompts[g], completions[g][k]), atol=1e-5,
                                   rtol=1e-5)
    # the packed row's gradient equals one row per completion's
    grads = []
    for share in (True, False):
        model.zero_grad()
        b = rollout_batch(prompts, completions, old, adv, idx, 0, torch.device("cpu"), share, **HEADS[head])
        logps, _ = completion_logps(model, b)
        (logps * b.advantages[:, None]).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
