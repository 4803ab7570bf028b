"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback. And SIGTERM as
an exception (`Terminated`, `sigterm_raises`), so that a command stopped by `kill` ends as one stopped by Ctrl-C."""

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """Bad input, a bad config value, a missing file or model: the message says what to do."""


class ConfigError(UserError):
    """A configuration value breaks a rule; the message names the field and the rule."""


class DataError(UserError):
    """A data file cannot be used; the message names `file:line`, the field and what was expected."""


class ModelError(UserError):
    """A model cannot be found or loaded."""


class TrainingDiverged(UserError):
    """The loss or gradients became NaN/inf; the last good checkpoint is kept."""


class MissingExtra(UserError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler's preemption or time limit, torchrun stopping a job) while a command runs. It is
    a KeyboardInterrupt so that it is answered as a Ctrl-C is: a training run keeps its last completed step and
    prints the command that resumes it, files being written are left as they were; the CLI exits 143."""


def raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM's handler while a command runs (`cli.main`): `Terminated` in the process that installed it. A process
    forked from it (which inherits Python's handlers) dies of the signal as it would have without this handler."""
    if os.getpid() != _HANDLER_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within: SIGTERM raises `Terminated` in this process, where SIGTERM still had its default action (in the main
    thread only, where Python runs signal handlers); the default is back after."""
    global _HANDLER_PID
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    _HANDLER_PID = os.getpid()
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_HANDLER_PID = -1
