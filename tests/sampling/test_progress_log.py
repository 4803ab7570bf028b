"""Off a terminal (a log file) a long sampling says how far it is now and then; a short one says nothing."""

from posttrain.sampling.sampler import _logged_progress


def test_a_line_every_so_often_and_none_for_a_short_run(capsys, monkeypatch):
    clock = iter([0.0, 1.0, 31.0, 32.0, 65.0])  # start, then one reading per item
    monkeypatch.setattr("posttrain.sampling.sampler.time.perf_counter", lambda: next(clock))
    assert list(_logged_progress(["a", "b", "c", "d"], "sampling", 30.0)) == ["a", "b", "c", "d"]
    assert capsys.readouterr().err.splitlines() == ["sampling: 1/4 batches, 31 s", "sampling: 3/4 batches, 65 s"]
    clock = iter([0.0, 5.0, 9.0])
    assert list(_logged_progress([1, 2], "sampling", 30.0)) == [1, 2] and capsys.readouterr().err == ""
