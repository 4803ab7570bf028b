"""The CPU thread choice: other processes' load is seen, this process's own work is not, the user's choice wins."""

import os
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


FAULTS_PER_ALLOCATION = """
import resource, sys, torch
from posttrain import cpu
kept = cpu.keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(30):  # a 40 MiB tensor made and freed again, as activations are at every layer
    if i == 10:
        start = faults()
    x = torch.ones(10 * 2**20)
    del x
print(kept, (faults() - start) / 20)
"""


def _faults_per_allocation(mode: str, **env) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ALLOCATION, mode], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout.split()
    return out[0], float(out[1])


def test_freed_memory_is_kept_for_the_next_tensor():
    """A 40 MiB tensor is 10,240 pages of 4 KiB. glibc's default maps it fresh and hands it back each time, so
    every allocation faults all its pages in again; with keep_freed_memory the freed block is reused."""
    assert _faults_per_allocation("default")[1] > 5000
    kept, faults = _faults_per_allocation("keep")
    assert kept == "True" and faults < 100


def test_the_users_malloc_settings_win():
    kept, faults = _faults_per_allocation("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert kept == "False" and faults > 5000
