"""Math-tier tests of the DPO-family losses: invariants and hand-worked examples."""

import math

import pytest
import torch
import torch.nn.functional as F

from posttrain.losses import dpo_loss, ipo_loss, simpo_loss


def worked_example():
    """One pair with πc - refc = 1 and πr - refr = -1, so h = 2."""
    policy_chosen = torch.tensor([-3.0], requires_grad=True)
    policy_rejected = torch.tensor([-6.0], requires_grad=True)
    ref_chosen = torch.tensor([-4.0])
    ref_rejected = torch.tensor([-5.0])
    return policy_chosen, policy_rejected, ref_chosen, ref_rejected


def test_dpo_is_log2_when_policy_equals_reference():
    """h = 0 for every pair, so each loss is -log σ(0) = log 2, whatever the logps and β."""
    torch.manual_seed(0)
    chosen, rejected = -10 * torch.rand(8), -10 * torch.rand(8)
    for beta in (0.01, 0.1, 1.0):
        loss, metrics = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=beta)
        assert loss.item() == pytest.approx(math.log(2))
        assert metrics["rewards/margins"].item() == 0.0
        assert metrics["rewards/accuracies"].item() == 0.0  # ties do not count as correct


def test_dpo_worked_example_loss_and_metrics():
    """β = 0.1, h = (-3 - -4) - (-6 - -5) = 1 - (-1) = 2, βh = 0.2.
    loss = -log σ(0.2) = log(1 + e^-0.2) = log(1.818731) = 0.598139.
    rewards/chosen = 0.1·1 = 0.1, rewards/rejected = 0.1·(-1) = -0.1, margins = 0.2,
    accuracies = 1, logps/chosen = -3, logps/rejected = -6."""
    loss, metrics = dpo_loss(*worked_example(), beta=0.1)
    assert loss.item() == pytest.approx(0.5981389, abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert metrics["rewards/margins"].item() == pytest.approx(0.2)
    assert metrics["rewards/accuracies"].item() == 1.0
    assert metrics["logps/chosen"].item() == -3.0
    assert metrics["logps/rejected"].item() == -6.0
    assert not any(value.requires_grad for value in metrics.values())


def test_accuracy_counts_float_noise_as_a_tie():
    """β = 0.1, TIE_RTOL = 1e-4. Each pair's margin must beat 1e-4 · 0.1 · (|πc| + |refc| + |πr| + |refr|).
    Pair 1: the policy is the reference up to rounding: πc = -20 + 2e-6, refc = -20, πr = refr = -30.
      margin = 0.1 · 2e-6 = 2e-7; tolerance = 1e-5 · (20 + 20 + 30 + 30) = 1e-3: a tie, not a win.
    Pair 2: πc = -19.98 (h = 0.02): margin = 2e-3 > 1e-5 · (19.98 + 20 + 60) = 9.998e-4: a win.
    Pair 3: πc = -20.02 (h = -0.02): a loss. accuracies = 1/3; TRL's `margin > 0` would count pair 1: 2/3."""
    from posttrain.losses.preference import TIE_RTOL

    assert TIE_RTOL == 1e-4
    dt = torch.float64  # -20 + 2e-6 is not a float32 number
    policy_chosen = torch.tensor([-20 + 2e-6, -19.98, -20.02], dtype=dt)
    ref_chosen = torch.full((3,), -20.0, dtype=dt)
    rejected = torch.full((3,), -30.0, dtype=dt)
    _, metrics = dpo_loss(policy_chosen, rejected, ref_chosen, rejected.clone(), beta=0.1)
    assert metrics["rewards/accuracies"].item() == pytest.approx(1 / 3)
    _, metrics = ipo_loss(policy_chosen, rejected, ref_chosen, rejected.clone(), beta=0.1)
    assert metrics["rewards/accuracies"].item() == pytest.approx(1 / 3)


def test_simpo_accuracy_tolerance_scales_with_the_average_logps():
    """β = 2: margin 2·(avg_c - avg_r) must beat 1e-4 · 2 · (|avg_c| + |avg_r|).
    avg_c = -1 + 1e-6, avg_r = -1: margin 2e-6 < 4e-4, a tie; avg_c = -0.99: margin 0.02 > 3.98e-4, a win."""
    _, metrics = simpo_loss(torch.tensor([-1 + 1e-6, -0.99], dtype=torch.float64),
                            torch.tensor([-1.0, -1.0], dtype=torch.float64), beta=2.0)
    assert metrics["rewards/accuracies"].item() == 0.5


def test_dpo_loss_is_the_batch_mean():
    """Pair 1 is the worked example (0.598139); pair 2 has policy = reference (log 2 = 0.693147).
    Mean = (0.598139 + 0.693147) / 2 = 0.645643; accuracies = 1/2."""
    policy_chosen = torch.tensor([-3.0, -2.0])
    policy_rejected = torch.tensor([-6.0, -2.0])
    ref_chosen = torch.tensor([-4.0, -2.0])
    ref_rejected = torch.tensor([-5.0, -2.0])
    loss, metrics = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)
    assert loss.item() == pytest.approx((0.5981389 + math.log(2)) / 2, abs=1e-6)
    assert metrics["rewards/accuracies"].item() == 0.5


def test_cdpo_half_smoothing_is_symmetric():
    """ε = 0.5: loss = 0.5·(softplus(-βh) + softplus(βh)), the same for h and -h.
    With βh = 0.2 and softplus(x) = softplus(-x) + x: 0.5·(2·0.598139 + 0.2) = 0.698139."""
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = worked_example()
    loss, _ = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, label_smoothing=0.5)
    swapped, _ = dpo_loss(policy_rejected, policy_chosen, ref_rejected, ref_chosen, label_smoothing=0.5)
    beta_h = torch.tensor(0.2)
    expected = 0.5 * (F.softplus(-beta_h) + F.softplus(beta_h))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert loss.item() == pytest.approx(0.6981389, abs=1e-6)
    assert swapped.item() == pytest.approx(loss.item(), abs=1e-6)


def test_cdpo_small_smoothing_mixes_both_directions():
    """ε = 0.1, βh = 0.2: 0.9·softplus(-0.2) + 0.1·softplus(0.2)
    = 0.9·0.598139 + 0.1·0.798139 = 0.538325 + 0.079814 = 0.618139."""
    loss, _ = dpo_loss(*worked_example(), beta=0.1, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.6181389, abs=1e-6)


def test_dpo_gradient_reaches_only_the_policy():
    """d loss / d πc = -β·σ(-βh) = -0.1·σ(-0.2) = -0.1·0.450166 = -0.0450166; d/dπr = +0.0450166.
    The reference logps are inputs without grad and must stay so."""
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = worked_example()
    loss, _ = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)
    loss.backward()
    assert policy_chosen.grad.item() == pytest.approx(-0.0450166, abs=1e-6)
    assert policy_rejected.grad.item() == pytest.approx(0.0450166, abs=1e-6)
    assert ref_chosen.grad is None and ref_rejected.grad is None


def test_ipo_worked_example():
    """β = 0.1: target 1/(2β) = 5; h = 2 (worked example), loss = (2 - 5)² = 9.
    d loss / d πc = 2(h - 5) = -6; d/dπr = +6."""
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = worked_example()
    loss, metrics = ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)
    assert loss.item() == pytest.approx(9.0)
    assert metrics["rewards/margins"].item() == pytest.approx(0.2)
    loss.backward()
    assert policy_chosen.grad.item() == pytest.approx(-6.0)
    assert policy_rejected.grad.item() == pytest.approx(6.0)
    assert ref_chosen.grad is None and ref_rejected.grad is None


def test_ipo_is_zero_at_its_target():
    """β = 0.5: target 1/(2·0.5) = 1; with h = 1 the loss is 0 (DPO's would still be > 0)."""
    loss, _ = ipo_loss(torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([0.0]), torch.tensor([0.0]), beta=0.5)
    assert loss.item() == 0.0


def test_simpo_worked_example():
    """β = 2, γ/β = 0.5 so γ = 1; avg_c = -1, avg_r = -2:
    β·avg_c - β·avg_r - γ = -2 + 4 - 1 = 1, loss = -log σ(1) = log(1 + e^-1) = 0.313262.
    rewards/chosen = -2, rewards/rejected = -4, margins = 2, accuracies = 1."""
    avg_chosen = torch.tensor([-1.0], requires_grad=True)
    loss, metrics = simpo_loss(avg_chosen, torch.tensor([-2.0]), beta=2.0, gamma_beta_ratio=0.5)
    assert loss.item() == pytest.approx(0.3132617, abs=1e-6)
    assert metrics["rewards/chosen"].item() == -2.0
    assert metrics["rewards/rejected"].item() == -4.0
    assert metrics["rewards/margins"].item() == 2.0
    assert metrics["rewards/accuracies"].item() == 1.0
    loss.backward()
    assert avg_chosen.grad.item() == pytest.approx(-2.0 * torch.sigmoid(torch.tensor(-1.0)).item())


def test_simpo_margin_shifts_the_equal_case():
    """Equal averages: the argument is -γ = -1, so loss = log(1 + e) = 1.313262 > log 2."""
    loss, _ = simpo_loss(torch.tensor([-1.5]), torch.tensor([-1.5]))
    assert loss.item() == pytest.approx(1.3132617, abs=1e-6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(3), torch.zeros(2))
