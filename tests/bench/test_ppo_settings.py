"""bench/ppo.py: the posttrain and TRL 1.12 configurations it times agree on every setting the comparison holds
equal. TRL's side is read in a fresh process with trl 1.12.0 first on sys.path (the bench installs it once into
$POSTTRAIN_CACHE/bench/trl-1.12.0; skipped when that cannot be done)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import ppo  # noqa: E402


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    """posttrain's settings, TRL's, and TRL's with the value clip and the minibatch count changed."""
    try:
        ppo.trl_folder()
    except SystemExit as e:
        pytest.skip(f"trl {ppo.TRL_VERSION} is not installed and could not be: {e}")
    out = str(tmp_path_factory.mktemp("ppo-settings"))
    return ppo.in_fresh_process(ppo.settings_of_both, ppo.BenchConfig(steps=7), out,
                                {"cliprange_value": 0.3, "num_mini_batches": 4})


def test_posttrain_and_trl_configs_agree(settings):
    """64 completions per step (TRL: 64 per device x 1 accumulation), 4 passes x 2 minibatches of 32, 7 steps
    (TRL: 7 x 64 total episodes), and the same sampling, optimizer, schedule, clipping, KL, GAE and value loss."""
    ours, (theirs, _) = settings
    ppo.same_settings(ours, theirs)
    assert ours["completions per step"] == 64 and ours["steps"] == 7
    assert ours["completions per forward/backward"] == 32 and ours["passes per step"] == 4


def test_a_changed_setting_is_caught(settings):
    ours, (_, changed) = settings
    caught = (r"minibatches per pass: posttrain 2, TRL 4; completions per forward/backward: posttrain 32, TRL 16;"
              r".* value clip: posttrain 0.2, TRL 0.3")
    with pytest.raises(SystemExit, match=caught):
        ppo.same_settings(ours, changed)
