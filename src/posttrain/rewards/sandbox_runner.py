"""The child side of the sandbox (`rewards.sandbox`): run as `python -I -S sandbox_runner.py`, standard library only.

It reads one JSON job from stdin (program, setup, tests, limits, the nonce, the fd to report on), then, in order:
1. cuts itself off the network: a new, empty network namespace (`unshare(CLONE_NEWNET)`; as a non-root user
   together with a user namespace), when the kernel allows it;
2. sets its resource limits (CPU seconds, address space, file size, open files, processes, no core dumps);
3. as root: drops to the job's unprivileged uid/gid (so file permissions, RLIMIT_NPROC and `kill` apply);
   then asks to be SIGKILLed when the trainer dies (PR_SET_PDEATHSIG);
4. installs an audit hook (PEP 578) that refuses sockets, process spawning, ctypes, signals to other processes,
   rlimit changes and any write outside the working directory; it cannot be removed by the code;
5. compiles the tests into an immutable tuple (so the program cannot edit them in memory), runs the program,
   then the setup, then each test, in one namespace, and writes one JSON line to the report
   fd: {"status": "done", "nonce": ..., "passed": k, "total": n, "error": first failure or null} only after the
   last test has run; {"status": "error", ...} when the program itself raised.
The parent trusts "done" only with the right nonce, so a program that exits early (`sys.exit`, `os._exit`,
a signal) has not passed. The nonce is in this process's memory: code that walks the runner's frames could read
it; the nonce defends against early exits, not against code written to attack this runner.
"""

import json
import os
import resource
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
SIGKILL = 9

# Audit events refused outright (https://docs.python.org/3/library/audit_events.html).
_DENIED = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
    "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "os.setuid", "os.setgid",
    "resource.setrlimit", "resource.prlimit", "sys.settrace", "sys.setprofile",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.gethostname", "socket.sethostname",
    "os.chroot", "mmap.__new__", "webbrowser.open",
})
# Modules that would reach around the hook: _posixsubprocess.fork_exec spawns without an audit event.
_DENIED_IMPORTS = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters", "_testcapi"})
# Events whose path arguments must lie inside the working directory.
_PATH_EVENTS = frozenset({
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown",
    "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "shutil.rmtree",
    "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.move",
})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _forget_ctypes() -> None:
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # the code must import ctypes afresh, which the hook refuses


def unshare_network(libc) -> bool:
    """Move into a new network namespace holding only a loopback device that is down; False when not allowed."""
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    return libc.unshare(flags) == 0


def reach_stdlib_through_fds() -> None:
    """Keep the standard library importable after the uid drop even where a parent directory of it is closed
    to other users (e.g. a pyenv Python under /root): each sys.path directory is opened now, while root, and
    imported through /proc/self/fd/N, which reaches the directory without walking its parents. The process
    is made dumpable again (the uid change cleared it) so that it may read its own /proc/self/fd."""
    moved = {}
    for entry in sys.path:
        if os.path.isdir(entry):
            moved[entry] = f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}"

    def through_fd(path: str) -> str:
        for old, new in moved.items():
            if path == old or path.startswith(old + os.sep):
                return new + path[len(old):]
        return path

    sys.path[:] = list(moved.values())
    for module in list(sys.modules.values()):
        package_path = getattr(module, "__path__", None)
        if isinstance(package_path, list):  # packages already imported (collections) find submodules here
            package_path[:] = [through_fd(p) for p in package_path]
    sys.path_importer_cache.clear()


def _own_tasks(uid: int) -> int:
    """Threads this uid runs now (RLIMIT_NPROC counts them all): the base a non-root sandbox adds its quota to."""
    count = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def set_limits(job: dict) -> None:
    """Resource limits; soft = hard (except CPU: SIGXCPU at the soft limit, SIGKILL one second later)."""
    cpu = int(job["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(job["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(job["file_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    uid = job["uid"] if job["uid"] is not None else os.getuid()
    base = 0 if job["uid"] is not None else _own_tasks(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (base + int(job["max_processes"]),) * 2)


def drop_privileges(uid: int, libc) -> None:
    """Become `uid` (no groups, no capabilities); dumpable again, so /proc/self/fd stays readable."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def die_with_parent(libc, parent_pid: int) -> None:
    """SIGKILL this process when the trainer dies (even by SIGKILL), so no sandbox outlives it. Set after the uid
    drop, which clears it; a trainer already gone by now is caught by the ppid check."""
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(4)


def install_audit_hook(workdir: str, blocked: list) -> None:
    """Refuse the events above (PEP 578); `blocked` collects what was refused, for the reason the parent gives."""
    realpath, join, fspath = os.path.realpath, os.path.join, os.fspath
    root = realpath(workdir)
    allowed_files = {os.devnull}

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an fd already open
        try:
            path = fspath(path)
        except TypeError:
            return True
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        full = realpath(join(root, path))
        return full == root or full.startswith(root + os.sep) or full in allowed_files

    def refuse(event: str, detail: str = ""):
        blocked.append(f"{event} {detail}".strip())
        raise PermissionError(f"sandbox: {event} is not allowed {detail}".strip())

    def hook(event: str, args: tuple) -> None:
        if event in _DENIED or event.startswith("ctypes."):
            refuse(event)
        elif event == "import" and args[0] in _DENIED_IMPORTS:
            refuse(event, args[0])
        elif event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
            if writes and not inside(path):
                refuse("writing", f"outside the working directory: {path!r}")
        elif event in _PATH_EVENTS:
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    refuse(event, f"outside the working directory: {arg!r}")

    sys.addaudithook(hook)


def _short(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".rstrip(": ")
    return text if len(text) <= limit else text[:limit] + "..."


def _compile_tests(tests: list) -> tuple:
    """The tests as an immutable tuple of (text, code or the SyntaxError), made before the program runs: a
    program that searched the heap for the test list (`gc.get_objects()`) and emptied it passed every test."""
    out = []
    for i, text in enumerate(tests):
        try:
            out.append((text, compile(text, f"<test {i + 1}>", "exec")))
        except BaseException as e:  # noqa: B036  raised in its turn, a failure of that test
            out.append((text, e))
    return tuple(out)


def run_job(job: dict, report) -> None:
    """Program, setup, then each test in one namespace; report the outcome (see the module docstring)."""
    compile_, exec_, nonce, blocked = compile, exec, job.pop("nonce"), job["blocked"]  # not left in a dict on the heap
    tests = _compile_tests(job.pop("tests"))  # nothing the program can reach holds them mutably any more
    namespace = {"__name__": "__main__"}
    for label, source in (("program", job["program"]), ("setup", job["setup"])):
        try:
            exec_(compile_(source, f"<{label}>", "exec"), namespace)
        except BaseException as e:  # noqa: B036  SystemExit and KeyboardInterrupt too: the tests never ran
            report({"status": "error", "where": label, "error": _short(e), "type": type(e).__name__,
                    "blocked": list(blocked)})
            return
    passed, first_failure = 0, None
    for i, (test, code) in enumerate(tests):
        try:
            if isinstance(code, BaseException):
                raise code
            exec_(code, namespace)
            passed += 1
        except BaseException as e:  # noqa: B036
            if first_failure is None:
                message = _short(e) if str(e) else f"{type(e).__name__}: {test.strip()[:200]}"
                first_failure = {"error": f"{message} (test {i + 1} of {len(tests)})", "type": type(e).__name__}
    report({"status": "done", "nonce": nonce, "passed": passed, "total": len(tests),
            "failure": first_failure, "blocked": list(blocked)})


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    write, exit_, fd = os.write, os._exit, int(job["report_fd"])
    libc = _libc()
    if not unshare_network(libc) and job["require_network_namespace"]:
        write(fd, b'{"status": "setup", "error": "no network namespace (unshare refused)"}\n')
        exit_(3)
    set_limits(job)
    if job["uid"] is not None:
        reach_stdlib_through_fds()
        drop_privileges(job["uid"], libc)
    die_with_parent(libc, int(job["parent_pid"]))
    del libc
    _forget_ctypes()
    job["blocked"] = []
    if job["audit_hook"]:
        install_audit_hook(os.getcwd(), job["blocked"])
    dumps = json.dumps

    def report(result: dict) -> None:
        write(fd, (dumps(result) + "\n").encode())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: B036  a full or closed stream must not lose the report
                pass
        exit_(0)  # skip the program's atexit handlers and non-daemon threads

    run_job(job, report)


if __name__ == "__main__":
    main()
