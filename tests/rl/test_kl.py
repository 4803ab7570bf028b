"""Math-tier tests of rl/kl.py: the k1/k2/k3 estimators on worked numbers and their invariants; the KL
controllers' updates and checkpoint state."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posttrain.rl.kl import AdaptiveKLController, FixedKLController, kl_penalty


def test_estimators_on_worked_numbers():
    """Token 1: p = 0.5, p_ref = 0.25, x = log 2 = 0.693147.
        k1 = 0.693147;  k2 = x²/2 = 0.480453/2 = 0.240227;  k3 = e^{-x} + x - 1 = 0.5 + 0.693147 - 1 = 0.193147.
    Token 2: p = 0.25, p_ref = 0.5, x = -log 2.
        k1 = -0.693147; k2 = 0.240227;                      k3 = 2 - 0.693147 - 1 = 0.306853."""
    logps = torch.log(torch.tensor([[0.5, 0.25]], dtype=torch.float64))
    ref_logps = torch.log(torch.tensor([[0.25, 0.5]], dtype=torch.float64))
    expected = {"k1": [0.693147, -0.693147], "k2": [0.240227, 0.240227], "k3": [0.193147, 0.306853]}
    for estimator, values in expected.items():
        out = kl_penalty(logps, ref_logps, estimator)
        assert out.shape == (1, 2)
        assert out[0].tolist() == pytest.approx(values, abs=1e-6)


def test_k3_is_nonnegative_and_zero_only_where_equal():
    torch.manual_seed(0)
    logps = -5 * torch.rand(4, 9, dtype=torch.float64)
    ref_logps = torch.where(torch.rand(4, 9) < 0.3, logps, -5 * torch.rand(4, 9, dtype=torch.float64))
    k3 = kl_penalty(logps, ref_logps, "k3")
    equal = logps == ref_logps
    assert equal.any() and (~equal).any()
    assert (k3[equal] == 0).all()
    assert (k3[~equal] > 0).all()
    assert (kl_penalty(logps, ref_logps, "k2") >= 0).all()


def test_k1_and_k3_average_to_the_exact_kl_under_the_policy():
    """Over tokens drawn from π the k1 and k3 estimators are unbiased: Σ_x π(x) k(x) = KL(π || π_ref) exactly.
    k3: Σ π (π_ref/π - log(π_ref/π) - 1) = Σ π_ref - 1 + Σ π log(π/π_ref) = KL. k2 is biased (its mean differs)."""
    torch.manual_seed(1)
    logps = torch.log_softmax(torch.randn(1, 10, dtype=torch.float64), -1)
    ref_logps = torch.log_softmax(torch.randn(1, 10, dtype=torch.float64), -1)
    kl = (logps.exp() * (logps - ref_logps)).sum()
    for estimator in ("k1", "k3"):
        assert (logps.exp() * kl_penalty(logps, ref_logps, estimator)).sum().item() == pytest.approx(kl.item())
    assert (logps.exp() * kl_penalty(logps, ref_logps, "k2")).sum().item() != pytest.approx(kl.item())


def test_kl_penalty_checks_its_inputs():
    with pytest.raises(ValueError, match="disagree"):
        kl_penalty(torch.zeros(2, 3), torch.zeros(2, 4), "k1")
    with pytest.raises(ValueError, match='"k1", "k2" or "k3"'):
        kl_penalty(torch.zeros(2, 3), torch.zeros(2, 3), "k4")


def test_fixed_controller_keeps_its_value():
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=512)
    assert controller.value == 0.05
    restored = FixedKLController(1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == 0.05


def test_adaptive_controller_worked_updates():
    """β = 0.1, target 6, horizon 10000, 256 samples a step.
    KL 9:   e = 9/6 - 1 = 0.5, clipped to 0.2:  β = 0.1 · (1 + 0.2 · 256/10000) = 0.1 · 1.00512 = 0.100512
    KL 5.4: e = 5.4/6 - 1 = -0.1:               β = 0.100512 · (1 - 0.1 · 0.0256) = 0.100512 · 0.99744 = 0.1002547
    KL 0:   e = -1, clipped to -0.2:            β = 0.1002547 · (1 - 0.00512) = 0.0997414"""
    controller = AdaptiveKLController(value=0.1, target=6.0, horizon=10000)
    controller.update(9.0, 256)
    assert controller.value == pytest.approx(0.100512)
    controller.update(5.4, 256)
    assert controller.value == pytest.approx(0.100512 * 0.99744)
    assert controller.value == pytest.approx(0.1002547, abs=1e-7)
    controller.update(0.0, 256)
    assert controller.value == pytest.approx(0.1002547 * 0.99488, abs=1e-7)
    controller.update(6.0, 256)  # on target: unchanged
    assert controller.value == pytest.approx(0.1002547 * 0.99488, abs=1e-7)


def test_adaptive_controller_resumes_from_its_state():
    """A controller rebuilt from a checkpoint's state_dict continues exactly as the original does."""
    original = AdaptiveKLController(value=0.2, target=1.0, horizon=1000)
    for kl in (3.0, 0.5):
        original.update(kl, 64)
    resumed = AdaptiveKLController(value=0.2, target=1.0, horizon=1000)
    resumed.load_state_dict(original.state_dict())
    for controller in (original, resumed):
        controller.update(1.1, 64)
    assert resumed.value == original.value
    assert math.isclose(original.value, 0.2 * (1 + 0.2 * 0.064) * (1 - 0.2 * 0.064) * (1 + 0.1 * 0.064))


def test_adaptive_controller_checks_its_settings():
    with pytest.raises(ValueError, match="must be > 0"):
        AdaptiveKLController(value=0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError, match="must be > 0"):
        AdaptiveKLController(value=0.1, target=1.0, horizon=0)


def test_the_rl_math_and_the_losses_import_nothing_heavier_than_torch():
    """A fresh interpreter importing posttrain.losses, rl.advantages and rl.kl has loaded no other posttrain
    package (models, data, training) and neither transformers nor datasets."""
    src = Path(__file__).resolve().parents[2] / "src"
    code = ("import sys, posttrain.losses, posttrain.rl.advantages, posttrain.rl.kl; "
            "print(sorted({m.split('.')[0] if not m.startswith('posttrain.') else m.split('.')[1] for m in sys.modules}"
            " & {'transformers', 'datasets', 'models', 'data', 'training', 'sampling', 'rewards'}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
