"""Math tier: FlatStart says once, after the first steps of a run, that every group's rewards were equal."""

from posttrain.rl.engine import FlatStart


def step(frac: float, reward: float) -> dict[str, float]:
    return {"train/frac_reward_zero_std": frac, "train/reward": reward}


def test_three_flat_steps_give_one_note_naming_the_reward():
    watch = FlatStart(total_steps=100, group_size=8)
    notes = [watch.see(step(1.0, r)) for r in (0.0, 0.0, 0.0, 0.0, 0.0)]
    assert notes[:2] == [None, None] and notes[3:] == [None, None]
    assert "each of the first 3 steps" in notes[2] and "8 completions" in notes[2] and "mean reward 0)" in notes[2]


def test_groups_that_differ_end_the_watch():
    watch = FlatStart(total_steps=100, group_size=4)
    assert [watch.see(s) for s in (step(1.0, 0.0), step(0.75, 0.1), step(1.0, 0.0), step(1.0, 0.0),
                                   step(1.0, 0.0))] == [None] * 5


def test_flat_groups_at_different_values_give_the_range():
    watch = FlatStart(total_steps=100, group_size=4)
    notes = [watch.see(step(1.0, r)) for r in (0.25, 0.5, 0.25)]
    assert "mean reward 0.25 to 0.5" in notes[2]


def test_a_run_shorter_than_the_watch_is_judged_on_its_steps():
    watch = FlatStart(total_steps=1, group_size=4)
    assert "in the first step," in watch.see(step(1.0, 1.0))


def test_steps_whose_advantages_are_not_zero_are_not_flat():
    """A baseline over the batch gives equal-reward groups advantages: those steps learn, so no note (trial 13:
    the note said nothing was learned while train/grad_norm was 0.77)."""
    watch = FlatStart(total_steps=100, group_size=1)
    assert [watch.see(step(1.0, r), no_advantage=False) for r in (131.0, 140.0, 150.0, 150.0)] == [None] * 4
