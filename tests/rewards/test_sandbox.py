"""The sandbox (rewards/sandbox.py) and the `code` reward: whatever a program does, it ends in a reward of 0.0 with
the right reason, and the test process itself is never hung or crashed. Limits are kept short so the suite is fast."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from posttrain.data.records import Prompt
from posttrain.errors import DataError
from posttrain.rewards.sandbox import CodeReward, Sandbox, SandboxLimits, extract_code, run_program

FAST = SandboxLimits(wall_s=3.0, cpu_s=1, memory_mb=256)
KERNEL_ONLY = SandboxLimits(wall_s=2.0, cpu_s=1, memory_mb=256, audit_hook=False)
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]


def prompt(tests, **fields) -> Prompt:
    return Prompt.from_dict({"prompt": "Write add(a, b).", "tests": tests, **fields})


def runner_processes() -> list[int]:
    """Live processes running the sandbox's runner (left-overs would be a leak)."""
    pids = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if b"sandbox_runner.py" in cmdline and state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def test_a_correct_program_passes_and_a_wrong_one_fails_with_the_assertion():
    ok = run_program(ADD, ADD_TESTS, limits=FAST)
    assert (ok.passed, ok.reason, ok.passed_tests, ok.total_tests) == (True, "passed", 2, 2)
    wrong = run_program("def add(a, b):\n    return a - b\n", ADD_TESTS, limits=FAST)
    assert not wrong.passed
    assert wrong.reason == "failed: AssertionError: assert add(1, 2) == 3 (test 1 of 2)"
    assert wrong.passed_tests == 0  # add(-1, 1) == -2 fails too


def test_an_infinite_loop_is_a_timeout_within_the_cpu_limit():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", ["assert True"], limits=FAST)
    assert (result.passed, result.reason) == (False, "timeout")
    assert time.monotonic() - start < FAST.wall_s + 2


def test_a_sleeping_program_is_killed_at_the_wall_clock_limit():
    limits = SandboxLimits(wall_s=1.0, cpu_s=1)
    start = time.monotonic()
    result = run_program("import time\ntime.sleep(60)\n", ["assert True"], limits=limits)
    assert (result.passed, result.reason) == (False, "timeout")
    assert time.monotonic() - start < 3.0
    assert runner_processes() == []


@pytest.mark.parametrize("bomb", ["x = bytearray(10 ** 10)", "x = [0] * 10 ** 9", "x = 'a' * (1 << 30)"])
def test_a_memory_bomb_is_memory(bomb):
    result = run_program(bomb, ["assert True"], limits=FAST)
    assert (result.passed, result.reason) == (False, "memory")


def test_a_network_call_is_blocked():
    result = run_program("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n", ["assert True"],
                         limits=FAST)
    assert not result.passed
    assert result.reason.startswith("blocked: socket.")


def test_a_write_outside_the_working_directory_is_blocked_and_nothing_is_written(tmp_path):
    target = tmp_path / "escaped.txt"
    result = run_program(f"open({str(target)!r}, 'w').write('x')\n", ["assert True"], limits=FAST)
    assert not result.passed
    assert result.reason.startswith("blocked: writing outside the working directory")
    assert not target.exists()
    inside = run_program("open('scratch.txt', 'w').write('ok')\nDATA = open('scratch.txt').read()\n",
                         ["assert DATA == 'ok'"], limits=FAST)
    assert inside.reason == "passed"  # its own working directory is writable


@pytest.mark.parametrize("exit_call, reason", [
    ("import sys\nsys.exit(0)\n", "failed: the program exited (SystemExit: 0) before the tests ran"),
    ("import os\nos._exit(0)\n", "crashed: exit code 0 before the tests finished"),
])
def test_exiting_before_the_tests_ran_has_not_passed(exit_call, reason):
    result = run_program(ADD + exit_call, ADD_TESTS, limits=FAST)
    assert (result.passed, result.reason, result.passed_tests) == (False, reason, 0)


def test_a_forged_report_without_the_nonce_has_not_passed():
    forged = json.dumps({"status": "done", "nonce": "guess", "passed": 1, "total": 1, "failure": None})
    # every fd the child holds: the report's is the trainer's own number (pass_fds), which grows with what the
    # test process has open (30 was too few after the feedback tests in one pytest run)
    program = f"import os\nfor fd in range(3, 4096):\n    try: os.write(fd, b{forged + chr(10)!r})\n" \
              "    except OSError: pass\nos._exit(0)\n"
    result = run_program(program, ["assert True"], limits=FAST)
    assert (result.passed, result.reason) == (False, "crashed: a forged report (wrong nonce)")


def test_a_program_that_empties_the_test_list_in_memory_has_not_passed():
    """A newcomer's hack, generic and without the runner's names: find the list of test strings on the heap and
    blank it; the tests are compiled into a tuple before the program runs now, so they run as sent."""
    hack = ("import gc\nfor o in gc.get_objects():\n"
            "    if isinstance(o, list) and o and all(isinstance(x, str) for x in o) and any('assert' in x for x in o):\n"
            "        o[:] = ['pass' for _ in o]\n"
            "def add(a, b):\n    return 0\n")
    result = run_program(hack, ADD_TESTS, limits=FAST)
    assert (result.passed, result.passed_tests, result.total_tests) == (False, 1, 2)  # add(-1, 1) == 0 holds
    assert result.reason.startswith("failed: AssertionError") and "(test 1 of" in result.reason
    bad = run_program(ADD, ["assert add(1, 2) == 3", "assert add(1,", "assert add(2, 2) == 4"], limits=FAST)
    assert (bad.passed, bad.passed_tests) == (False, 2) and "SyntaxError" in bad.reason and "(test 2 of 3)" in bad.reason


def test_a_fork_bomb_is_blocked_by_the_hook():
    result = run_program("import os\nwhile True:\n    os.fork()\n", ["assert True"], limits=FAST)
    assert (result.passed, result.reason) == (False, "blocked: os.fork")


def test_a_fork_bomb_is_contained_by_the_kernel_layers_alone():
    """Without the audit hook: RLIMIT_NPROC caps the processes, the wall clock ends the run, and the process
    group (and, as root, the job's uid) is killed, so nothing of it outlives the run."""
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    result = run_program(bomb, ["assert True"], limits=KERNEL_ONLY)
    assert (result.passed, result.reason) == (False, "timeout")
    assert time.monotonic() - start < KERNEL_ONLY.wall_s + 3
    deadline = time.monotonic() + 2
    while runner_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner_processes() == []
    # the very next job has its full process quota (as root, the bomb's zombies kept its uid's count up for ~1 s)
    fork_once = "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n"
    assert run_program(bomb, ["assert True"], limits=KERNEL_ONLY).reason == "timeout"
    assert run_program(fork_once, ["assert True"], limits=KERNEL_ONLY).reason == "passed"


def test_the_trainers_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("POSTTRAIN_TEST_SECRET", "hunter2")
    program = "import os\nprint(sorted(os.environ))\nSECRET = os.environ.get('POSTTRAIN_TEST_SECRET')\n"
    result = run_program(program, ["assert SECRET == 'hunter2'"], limits=FAST)
    assert not result.passed
    assert result.reason.startswith("failed: AssertionError")
    assert "POSTTRAIN_TEST_SECRET" not in result.stdout and "PATH" in result.stdout


def test_huge_output_is_capped():
    limits = SandboxLimits(wall_s=3.0, cpu_s=1, output_bytes=4096)
    result = run_program("while True:\n    print('x' * 100)\n", ["assert True"], limits=limits)
    assert (result.passed, result.reason) == (False, "output: more than 4096 bytes")
    assert 0 < len(result.stdout) <= 4096


def test_sixteen_programs_run_concurrently_on_four_workers():
    """Each sleeps 0.4 s: one after another that is 6.4 s of sleeping alone; four at a time ~1.6 s plus start-ups."""
    jobs = [("import time\ntime.sleep(0.4)\n" + ADD, ADD_TESTS, "")] * 16
    start = time.monotonic()
    results = Sandbox(FAST, workers=4).run_many(jobs)
    elapsed = time.monotonic() - start
    assert [r.reason for r in results] == ["passed"] * 16
    assert elapsed < 4.5, f"16 programs took {elapsed:.1f} s on 4 workers"


@pytest.mark.parametrize("limits", [FAST, SandboxLimits(wall_s=3.0, cpu_s=1, audit_hook=False,
                                                       require_network_namespace=True)],
                         ids=["audit hook", "network namespace alone"])
def test_a_server_on_the_trainers_loopback_is_out_of_reach(limits):
    """The hook refuses the connect; without the hook the child's own network namespace has no route to the
    trainer's loopback (or, where the kernel gives no namespace, the job refuses to run): no connection arrives."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    program = f"import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))\n"
    try:
        result = run_program(program, ["assert True"], limits=limits)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    assert not result.passed
    expected = ("blocked: socket.connect",) if limits.audit_hook else (
        "failed: ConnectionRefusedError", "failed: OSError: [Errno 101]", "crashed: no network namespace")
    assert result.reason.startswith(expected), result.reason


@pytest.mark.parametrize("completion, code", [
    ("Here:\n```python\ndef f():\n    return 1\n```\nand better:\n```python\ndef f():\n    return 2\n```\n",
     "def f():\n    return 2\n"),
    ("```\nx = 1\n```\n", "x = 1\n"),
    ("```py\nx = 1\n```\n```text\nnot code\n```", "x = 1\n"),
    ("x = 1\n", "x = 1\n"),
    ("```python\nx = 1\n", "x = 1\n"),  # cut off at max tokens
])
def test_extract_code(completion, code):
    assert extract_code(completion) == code


def test_code_reward_scores_and_explains_a_batch():
    reward = CodeReward(FAST, workers=2)
    humaneval = "def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)\n"
    prompts = [prompt(ADD_TESTS), prompt(ADD_TESTS), prompt("assert add(2, 2) == math.floor(4.5)", setup="import math"),
               prompt(humaneval)]
    completions = [f"```python\n{ADD}```", "```python\ndef add(a, b):\n    return 3\n```", ADD, ADD]
    assert reward.explain_batch(prompts, completions) == [
        (1.0, "passed"), (0.0, "failed: AssertionError: assert add(-1, 1) == 0 (test 2 of 2)"), (1.0, "passed"),
        (1.0, "passed")]
    assert reward.score_batch(prompts, completions) == [1.0, 0.0, 1.0, 1.0]
    assert reward(prompts[0], completions[0]) == 1.0
    assert (reward.name, reward.reference_fields) == ("code", {"tests"})


def test_the_fraction_option_counts_passed_tests():
    reward = CodeReward(FAST, fraction=True)
    tests = ["assert add(1, 2) == 3", "assert add(1, 1) == 5", "assert add(0, 0) == 0", "assert add(2, 2) == 1"]
    assert reward(prompt(tests), ADD) == 0.5
    assert reward(prompt(tests), ADD + "import os\nos._exit(0)\n") == 0.0  # the tests never ran


def test_prompts_without_tests_or_with_bad_tests_are_a_data_error():
    reward = CodeReward(FAST)
    with pytest.raises(DataError, match='"tests"'):
        reward(Prompt.from_dict({"prompt": "Write add."}), ADD)
    for bad in ([1, 2], []):
        with pytest.raises(DataError, match="non-empty list of strings"):
            reward(prompt(bad), ADD)
    for bad, which in (("", "test 1 of 1"), ("  \n", "test 1 of 1"), (["assert add(1, 2) == 3", ""], "test 2 of 2")):
        with pytest.raises(DataError, match=f'{which} in "tests" is empty \\(it would pass any program\\)'):
            reward(prompt(bad), ADD)  # an empty test passes anything: named, not 'must be a non-empty list'
    with pytest.raises(DataError, match='"setup" must be a string'):
        reward(prompt(ADD_TESTS, setup=["import math"]), ADD)


def test_the_builtin_python_task_solutions_pass_and_an_empty_answer_fails():
    """Every shipped problem's reference solution passes its own tests; `pass` passes none of them."""
    from posttrain.tasks import TASKS

    rows = TASKS["python"].rows("train") + TASKS["python"].rows("heldout")
    assert (len(rows), len(TASKS["python"].rows("heldout")), TASKS["python"].reward) == (21, 4, "code")
    prompts = [Prompt.from_dict(row) for row in rows]
    reward = CodeReward(FAST, workers=4)
    solved = reward.explain_batch(prompts, [f"```python\n{row['solution']}```" for row in rows])
    assert solved == [(1.0, "passed")] * len(rows)
    assert reward.score_batch(prompts, ["pass"] * len(rows)) == [0.0] * len(rows)


def test_a_running_program_dies_with_its_trainer(tmp_path):
    """SIGKILL a trainer process while its sandboxed program sleeps: the program goes too (PR_SET_PDEATHSIG)."""
    trainer = subprocess.Popen([sys.executable, "-c", "from posttrain.rewards.sandbox import run_program, SandboxLimits\n"
                                "run_program('import time\\ntime.sleep(60)', ['assert True'], "
                                "limits=SandboxLimits(wall_s=60, cpu_s=5))"],
                               env={**os.environ, "TMPDIR": str(tmp_path)})  # a killed trainer leaves its job's dir
    try:
        deadline = time.monotonic() + 10
        while not runner_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner_processes(), "the sandbox never started"
        time.sleep(0.3)  # past the runner's set-up
    finally:
        trainer.kill()
        trainer.wait()
    deadline = time.monotonic() + 3
    while runner_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner_processes() == []
