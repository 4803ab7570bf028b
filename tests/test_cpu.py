"""The CPU thread choice: other processes' load is seen, this process's own work is not, the user's choice wins."""

import subprocess
import sys
import threading
import time

import pytest
import torch

from posttrain import cpu


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_busy_process_is_seen():
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        assert cpu.others_busy(cpu.sample(), min_window=1.0) >= 0.5  # one core's worth, less scheduling noise
    finally:
        loop.kill()
        loop.wait()


def test_our_own_work_is_counted_as_ours_and_left_out(monkeypatch):
    start = cpu.sample()

    def spin() -> None:  # 0.5 s of this thread's own CPU time, however busy the machine is
        stop = time.thread_time() + 0.5
        while time.thread_time() < stop:
            pass

    spin_thread = threading.Thread(target=spin)  # a thread of ours, as torch's are
    spin_thread.start()
    spin_thread.join()
    assert cpu.sample().own - start.own >= 0.45
    # 2 s of wall time, 5 CPU-seconds used on the machine, 3 of them ours: others kept 1 core busy
    monkeypatch.setattr(cpu, "sample", lambda: cpu.CpuSample(wall=12.0, busy=105.0, own=8.0))
    assert cpu.others_busy(cpu.CpuSample(wall=10.0, busy=100.0, own=5.0), min_window=0.0) == pytest.approx(1.0)


def test_fewer_threads_when_other_processes_hold_cores(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu, "_DEFAULT", 2)
    monkeypatch.setattr(cpu, "cores", lambda: 2)
    monkeypatch.setattr(cpu, "others_busy", lambda: 1.1)
    threads, note = cpu.choose_threads()
    assert threads == 1 and torch.get_num_threads() == 1
    assert "keep 1.1 of 2 CPU cores busy: 1 torch thread(s) instead of 2" in note
    monkeypatch.setattr(cpu, "others_busy", lambda: 0.2)  # the next run in this process finds the machine quiet
    assert cpu.choose_threads() == (2, None) and torch.get_num_threads() == 2


def test_the_users_choice_wins(monkeypatch, restore_threads):
    monkeypatch.setattr(cpu, "others_busy", lambda: 1.9)
    monkeypatch.setattr(cpu, "cores", lambda: 2)
    monkeypatch.setattr(cpu, "_DEFAULT", 2)
    torch.set_num_threads(2)
    assert cpu.choose_threads(2) == (2, None) and torch.get_num_threads() == 2  # --run.threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu.choose_threads() == (2, None) and torch.get_num_threads() == 2  # OMP_NUM_THREADS (torchrun sets it)


def test_a_run_says_it_once_its_checks_pass_and_bad_input_stays_one_line(monkeypatch, restore_threads, tmp_path,
                                                                         capsys):
    from posttrain.cli import main

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu, "_DEFAULT", 2)
    monkeypatch.setattr(cpu, "cores", lambda: 2)
    monkeypatch.setattr(cpu, "others_busy", lambda: 1.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "bot", "content": "hi"}]}\n')
    assert main(["sft", "--data.train", str(bad), "--run.output-dir", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # the error alone
    assert main(["sft", "--optim.max-steps", "1", "--optim.warmup-steps", "0", "--run.output-dir", str(tmp_path)]) == 0
    assert "other processes keep 1.0 of 2 CPU cores busy: 1 torch thread(s) instead of 2" in capsys.readouterr().err
