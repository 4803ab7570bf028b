"""Running untrusted Python against tests, and the `code` reward built on it (docs/sandbox.md).

    result = run_program("def add(a, b): return a + b", ["assert add(1, 2) == 3"])
    result.passed, result.reason            # True, "passed"
    Sandbox(SandboxLimits(), workers=4).run_many(jobs)      # many at once, in order
    CodeReward()(prompt_record, completion)                 # 1.0 when the completion's code passes the tests

Each program runs in its own child process (`sandbox_runner.py`, started as `python -I -S`: no site-packages, no
PYTHON* variables) in a throwaway working directory, with a clean environment, a wall-clock limit enforced here
(the whole process group, and as root every process of the job's own uid, is killed), and inside the child: CPU,
address-space, file-size and process-count limits, no network (a network namespace), an unprivileged uid when
the trainer is root, and an audit hook. stdout and stderr go to files capped by the file-size limit. A worker
pool of threads drives the children; the trainer never shares memory with them.

Every `Result` carries a reason: "passed", "failed: AssertionError: ... (test 2 of 3)", "timeout", "memory",
"blocked: socket.connect", "output: ...", "crashed: ...". A run passes only when the runner reports, with the
job's random nonce, that every test ran and passed, so `sys.exit(0)` or `os._exit(0)` before the tests is not a
pass. What each layer does and does NOT protect against: docs/sandbox.md. It is not a VM.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from posttrain.data.records import Prompt
from posttrain.errors import DataError
from posttrain.rewards.functions import reference_field

RUNNER = Path(__file__).with_name("sandbox_runner.py")
UID_BASE = 61000
"""As root, each running job gets its own uid from UID_BASE .. UID_BASE + UID_COUNT - 1: one no job holds and
no process (not even a zombie, which still counts against RLIMIT_NPROC until init reaps it) belongs to."""
UID_COUNT = 256


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use. The defaults suit short test-style programs (docs/sandbox.md)."""

    wall_s: float = 5.0
    """Wall-clock seconds from start to finish (Python's own start-up included); then the job is killed."""
    cpu_s: int = 2
    """CPU seconds (RLIMIT_CPU): SIGXCPU at this many, SIGKILL one second later."""
    memory_mb: int = 512
    """Address space in MiB (RLIMIT_AS): allocations past it raise MemoryError."""
    output_bytes: int = 65536
    """Bytes kept of stdout and of stderr each, and the largest file the program may write (RLIMIT_FSIZE)."""
    max_processes: int = 16
    """Processes and threads the job's uid may have (RLIMIT_NPROC, which counts every thread as a task: a program
    that starts more threads gets "can't start new thread"); as non-root, on top of those it has already."""
    audit_hook: bool = True
    """Refuse sockets, spawning, ctypes and writes outside the working directory with a clear reason. Turn off
    only to check that the kernel layers hold by themselves."""
    require_network_namespace: bool = False
    """Refuse to run (reason "crashed: no network namespace") where the kernel will not give one, instead of
    relying on the audit hook alone for "no network"."""

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "output_bytes", "max_processes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)}")
        for name in ("wall_s", "cpu_s"):  # past a day the OS timers overflow (OverflowError) once the first job runs
            if not getattr(self, name) <= 86400:
                raise ValueError(f"SandboxLimits.{name} must be at most 86400 (a day), got {getattr(self, name)}")


@dataclass(frozen=True)
class Result:
    """One program's outcome; `passed_tests` of `total_tests` ran and passed (0 of n unless the runner finished)."""

    passed: bool
    reason: str
    passed_tests: int
    total_tests: int
    stdout: str
    stderr: str
    seconds: float


class _Uids:
    """Free uids for jobs run as root, one per running job, locked across processes (two trainers on one host)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # uid -> lock-file fd

    def acquire(self) -> int:
        with self._lock:
            # A job killed with many processes (a fork bomb) leaves zombies for a second or so: a fresh uid
            # then, or the next job on this one would find its process quota already spent.
            busy = _uids_with_processes()
            for uid in range(UID_BASE, UID_BASE + UID_COUNT):
                if uid in self._held or uid in busy:
                    continue
                fd = os.open(os.path.join(tempfile.gettempdir(), f"posttrain-sandbox-uid-{uid}.lock"),
                             os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self._held[uid] = fd
                return uid
        raise RuntimeError(f"sandbox: all {UID_COUNT} uids from {UID_BASE} are in use")

    def release(self, uid: int) -> None:
        with self._lock:
            os.close(self._held.pop(uid))  # closing the fd drops the flock


_UIDS = _Uids()


def _uids_with_processes() -> set[int]:
    """The uids that own a process now, zombies included."""
    uids = set()
    for name in os.listdir("/proc"):
        try:
            if name.isdigit():
                uids.add(os.stat(f"/proc/{name}").st_uid)
        except OSError:
            continue  # gone meanwhile
    return uids


def _live_pids_of(uid: int) -> list[int]:
    """Processes of `uid` that are not zombies (killed ones wait there until init reaps them)."""
    pids = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                with open(f"/proc/{name}/stat", "rb") as f:
                    state = f.read().rpartition(b")")[2].split()[0]
                if state not in (b"Z", b"X"):
                    pids.append(int(name))
        except (OSError, IndexError):
            continue  # gone meanwhile
    return pids


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid`, escaped ones too (setsid, double forks), until none is left. RLIMIT_NPROC
    keeps the number bounded, so a fork bomb cannot outrun the rounds."""
    for _ in range(100):
        pids = _live_pids_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.001)


def _clean_env(workdir: str) -> dict[str, str]:
    """None of the trainer's variables: only what a plain Python program needs."""
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _read_capped(path: str, limit: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) >= limit


def _reason(report: dict | None, nonce: str, returncode: int | None, timed_out: bool, limits: SandboxLimits,
            stderr: str, capped: bool, sent: int) -> tuple[bool, str, int]:
    """(passed, reason, tests passed) from what the runner reported and how the process ended (`sent`: the number
    of tests sent to it)."""
    blocked = (report or {}).get("blocked") or []
    if report and report.get("status") == "done" and report.get("nonce") == nonce:
        if report.get("total") != sent or not 0 <= report.get("passed", -1) <= sent:
            return False, f"crashed: the runner reported {report.get('passed')} of {report.get('total')} tests, " \
                          f"{sent} were sent", 0
        failure = report.get("failure")
        if failure is None:
            return True, "passed", report["passed"]
        if failure["type"] == "MemoryError":
            return False, "memory", report["passed"]
        prefix = f"blocked: {blocked[0]}; " if blocked else ""
        return False, f"{prefix}failed: {failure['error']}", report["passed"]
    if timed_out or returncode == -signal.SIGXCPU:
        return False, "timeout", 0
    if report and report.get("status") == "done":
        return False, "crashed: a forged report (wrong nonce)", 0
    if report and report.get("status") == "error":
        if report["type"] == "MemoryError":
            return False, "memory", 0
        if capped and report["type"] == "OSError":
            return False, f"output: more than {limits.output_bytes} bytes", 0
        if blocked:
            return False, f"blocked: {blocked[0]}", 0
        if report["type"] == "SystemExit":
            return False, f"failed: the {report['where']} exited ({report['error']}) before the tests ran", 0
        return False, f"failed: {report['error']} (in the {report['where']})", 0
    if report and report.get("status") == "setup":
        return False, f"crashed: {report['error']}", 0
    if "MemoryError" in stderr:
        return False, "memory", 0
    if capped:
        return False, f"output: more than {limits.output_bytes} bytes", 0
    how = f"killed by {signal.Signals(-returncode).name}" if returncode and returncode < 0 else f"exit code {returncode}"
    last_line = stderr.strip().splitlines()[-1][:200] if stderr.strip() else ""
    return False, f"crashed: {how} before the tests finished" + (f" ({last_line})" if last_line else ""), 0


def run_program(program: str, tests: Sequence[str], setup: str = "", limits: SandboxLimits = SandboxLimits()) -> Result:
    """Run `program`, then `setup`, then each test (a statement, usually an assert) in one child process."""
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    uid = _UIDS.acquire() if os.geteuid() == 0 else None
    base = tempfile.mkdtemp(prefix="posttrain-sandbox-")
    try:
        os.chmod(base, 0o711)  # the child may pass through to its workdir but not list or read the reports
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
        out_path, err_path, report_path = (os.path.join(base, n) for n in ("stdout", "stderr", "report"))
        with open(out_path, "wb") as out, open(err_path, "wb") as err, open(report_path, "wb") as report_file:
            job = {"program": program, "setup": setup, "tests": list(tests), "nonce": nonce, "uid": uid,
                   "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_mb << 20, "file_bytes": limits.output_bytes,
                   "max_processes": limits.max_processes, "audit_hook": limits.audit_hook,
                   "require_network_namespace": limits.require_network_namespace, "parent_pid": os.getpid(),
                   "report_fd": report_file.fileno()}
            returncode, timed_out = _supervise(job, out, err, report_file.fileno(), workdir, limits, uid)
        stdout, out_capped = _read_capped(out_path, limits.output_bytes)
        stderr, err_capped = _read_capped(err_path, limits.output_bytes)
        lines = Path(report_path).read_text(errors="replace").splitlines()
        try:
            report = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            report = None
        passed, reason, n_passed = _reason(report, nonce, returncode, timed_out, limits, stderr,
                                           out_capped or err_capped, len(tests))
        return Result(passed, reason, n_passed, len(tests), stdout, stderr, time.monotonic() - start)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if uid is not None:
            _UIDS.release(uid)


def _supervise(job: dict, out, err, report_fd: int, workdir: str, limits: SandboxLimits,
               uid: int | None) -> tuple[int | None, bool]:
    """Start the runner, feed it the job, wait at most `wall_s`; kill all it left behind. (returncode, timed out)"""
    process = subprocess.Popen([sys.executable, "-I", "-S", str(RUNNER)], stdin=subprocess.PIPE, stdout=out,
                               stderr=err, pass_fds=(report_fd,), cwd=workdir, env=_clean_env(workdir),
                               start_new_session=True)
    timed_out = False
    try:
        process.communicate(json.dumps(job).encode(), timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    except BrokenPipeError:
        pass  # the child died before reading its job; its exit status says why
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the session's group: the runner and children it forked
        except (ProcessLookupError, PermissionError):
            pass
        if uid is not None:
            _kill_uid(uid)  # processes that left the group (setsid, double fork)
        process.wait()
    return (None if timed_out else process.returncode), timed_out


class Sandbox:
    """A pool of `workers` threads, each driving one child process at a time."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), workers: int = 4) -> None:
        if workers < 1:
            raise ValueError(f"Sandbox needs workers >= 1, got {workers}")
        self.limits = limits
        self.workers = workers

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str], str]]) -> list[Result]:
        """(program, tests, setup) for each job -> its Result, in order."""
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)),
                                thread_name_prefix="posttrain-sandbox") as pool:
            return list(pool.map(lambda job: run_program(*job, limits=self.limits), jobs))


_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(completion: str) -> str:
    """The last ```python (or ```py) fenced block, else the last ``` block of any kind, else the whole text.

    A block left open at the end (a completion cut at max tokens) counts as running to the end of the text.
    """
    blocks = _FENCE.findall(completion)
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    return completion


def tests_of(prompt: Prompt) -> tuple[list[str], str]:
    """The prompt's `tests` (a list of statements, each one test; or one string of test code, one test) and
    its optional `setup` code; a DataError when either has the wrong type."""
    tests = reference_field(prompt, "tests", "code")
    if isinstance(tests, str):
        tests = [tests]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise DataError(f'prompt {prompt.text[:40]!r}: "tests" must be a non-empty list of strings (each a test '
                        f'statement such as "assert f(1) == 2") or one string of test code, got {tests!r:.80}')
    blank = next((i for i, t in enumerate(tests, start=1) if not t.strip()), None)
    if blank is not None:  # an empty test would pass any program: a free reward, not a check
        raise DataError(f'prompt {prompt.text[:40]!r}: test {blank} of {len(tests)} in "tests" is empty (it '
                        'would pass any program); remove it or write the statement it should check')
    setup = prompt.reference.get("setup", "")
    if not isinstance(setup, str):
        raise DataError(f'prompt {prompt.text[:40]!r}: "setup" must be a string of Python code, got {setup!r:.80}')
    return tests, setup


class CodeReward:
    """The `code` reward: the completion's code (`extract_code`) run against the prompt's `tests` in the sandbox.

    1.0 when every test passes, else 0.0; with `fraction=True`, the fraction of the tests that passed (a test
    that hangs or crashes the process still makes it 0.0: the later tests never ran).
    """

    name = "code"
    reference_fields = frozenset({"tests"})
    """The prompt fields it needs (`rewards.functions.required_fields`); `setup` is optional."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), workers: int = 4, fraction: bool = False) -> None:
        self.sandbox = Sandbox(limits, workers)
        self.fraction = fraction

    def __call__(self, prompt_record: Prompt, completion: str) -> float:
        return self.score_batch([prompt_record], [completion])[0]

    @staticmethod
    def check_reference(prompt_record: Prompt) -> None:
        """A DataError when the prompt's tests or setup have the wrong shape: `check_reference_fields` runs it
        on every prompt before sampling, so a bad row does not stop a run at the step that first draws it."""
        tests_of(prompt_record)

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        return [score for score, _ in self.explain_batch(prompts, completions)]

    def explain_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[tuple[float, str]]:
        """(reward, reason) for each completion, run concurrently on the pool."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        jobs = []
        for prompt, completion in zip(prompts, completions):
            tests, setup = tests_of(prompt)  # every prompt checked before anything runs
            jobs.append((extract_code(completion), tests, setup))
        return [(self._score(r), r.reason) for r in self.sandbox.run_many(jobs)]

    def _score(self, result: Result) -> float:
        if result.passed:
            return 1.0
        return result.passed_tests / result.total_tests if self.fraction else 0.0
