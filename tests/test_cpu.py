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


def test_a_busy_process_is_seen_and_our_own_work_is_not():
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        assert cpu.others_busy(cpu.sample(), min_window=1.0) >= 0.5  # one core's worth, less scheduling noise
    finally:
        loop.kill()
        loop.wait()
    start, stop = cpu.sample(), time.monotonic() + 1.0

    def spin() -> None:
        while time.monotonic() < stop:
            pass

    spin = threading.Thread(target=spin)
    spin.start()
    spin.join()
    assert cpu.others_busy(start, min_window=1.0) < 0.5  # a second of our own spinning is not "other processes"


def test_fewer_threads_when_other_processes_hold_cores(monkeypatch, restore_threads, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(cpu, "cores", lambda: 2)
    monkeypatch.setattr(cpu, "others_busy", lambda: 1.1)
    assert cpu.choose_threads() == 1 and torch.get_num_threads() == 1
    assert "keep 1.1 of 2 CPU cores busy: 1 torch thread(s) instead of 2" in capsys.readouterr().err
    torch.set_num_threads(2)
    monkeypatch.setattr(cpu, "others_busy", lambda: 0.2)
    assert cpu.choose_threads() == 2 and capsys.readouterr().err == ""


def test_the_users_choice_wins(monkeypatch, restore_threads):
    monkeypatch.setattr(cpu, "others_busy", lambda: 1.9)
    monkeypatch.setattr(cpu, "cores", lambda: 2)
    torch.set_num_threads(2)
    assert cpu.choose_threads(2) == 2 and torch.get_num_threads() == 2  # --run.threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu.choose_threads() == 2 and torch.get_num_threads() == 2  # OMP_NUM_THREADS (torchrun sets it)
