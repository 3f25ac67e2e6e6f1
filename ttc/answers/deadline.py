"""Run a function under a wall-clock deadline, in any thread, by raising an exception inside it.

math-verify's own timeouts call `signal.alarm` around each parse and each comparison: whole seconds,
one alarm per step (so a decision with several steps can take several times the limit), and
`signal.signal` raises ValueError outside the main thread. We switch those off and put one deadline
around the whole decision instead, raised as `DeadlineExceeded` inside the running work:

- In the main thread: a SIGALRM from `setitimer(ITIMER_REAL)`. The handler and timer that were
  installed before (pytest-timeout, a caller's own alarm) are restored afterwards, the caller's timer
  shortened by the time we used.
- In any other thread, where signals cannot be used: a watchdog thread that, at the deadline, schedules
  the exception in the working thread with CPython's `PyThreadState_SetAsyncExc`.

Either way the exception arrives between two bytecodes. It is a BaseException, so the
`except Exception` blocks in math-verify and sympy let it through (and math-verify's
`except TimeoutException` too), and it is raised again every `_REFIRE_S` until the work stops, in case
some `except BaseException` swallowed it. Code running inside one C call (big-integer arithmetic)
cannot be interrupted by either means: the pre-filters in `guards` keep such inputs out.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# After the deadline, the exception is raised again this often until the work gives up.
_REFIRE_S = 0.05


class DeadlineExceeded(BaseException):
    """Raised inside the work when its deadline passes (BaseException: library code must not catch it)."""


def call_with_deadline(work: Callable[[], T], seconds: float, on_timeout: T) -> T:
    """Return `work()`, or `on_timeout` if it has not finished after `seconds`."""
    if seconds <= 0:
        return on_timeout
    alarm = _make_alarm(seconds)
    if alarm is None:  # neither mechanism is available here (not CPython, or a C-level SIGALRM handler)
        return work()
    try:
        try:
            alarm.arm()
            return work()
        finally:
            _disarm_surely(alarm)
    except DeadlineExceeded:
        return on_timeout
    finally:
        _disarm_surely(alarm)


def _disarm_surely(alarm) -> None:
    """Disarm, even if one last DeadlineExceeded lands while disarming (disarm is idempotent)."""
    while True:
        try:
            alarm.disarm()
            return
        except DeadlineExceeded:
            continue


def _make_alarm(seconds: float):
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        if signal.getsignal(signal.SIGALRM) is not None:  # None: installed from C, not restorable
            return _SignalAlarm(seconds)
    if hasattr(ctypes, "pythonapi") and hasattr(ctypes.pythonapi, "PyThreadState_SetAsyncExc"):
        return _WatchdogAlarm(seconds)
    return None


class _SignalAlarm:
    """SIGALRM at the deadline and every `_REFIRE_S` after, for the main thread."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.armed = False
        self.restored = True

    def arm(self) -> None:
        self.started = time.monotonic()
        self.previous_handler = signal.getsignal(signal.SIGALRM)
        self.restored = False
        self.previous_timer = signal.getitimer(signal.ITIMER_REAL)
        self.armed = True
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds, _REFIRE_S)

    def _on_alarm(self, signum, frame) -> None:
        if self.armed:
            raise DeadlineExceeded()

    def disarm(self) -> None:
        self.armed = False
        if self.restored:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous_handler)
        previous_delay, previous_interval = self.previous_timer
        if previous_delay > 0:
            remaining = previous_delay - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), previous_interval)
        self.restored = True


class _WatchdogAlarm:
    """A watchdog thread that raises DeadlineExceeded in the calling thread, for threads other than main."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.target = threading.get_ident()
        self.lock = threading.Lock()  # held while deciding to raise, and while disarming
        self.finished = threading.Event()
        self.armed = False

    def arm(self) -> None:
        self.armed = True
        threading.Thread(target=self._watch, name="ttc-answer-deadline", daemon=True).start()

    def _watch(self) -> None:
        timeout = self.seconds
        while not self.finished.wait(timeout):
            with self.lock:
                if not self.armed:
                    return
                _set_async_exception(self.target, DeadlineExceeded)
            timeout = _REFIRE_S

    def disarm(self) -> None:
        with self.lock:
            self.armed = False
            self.finished.set()
            _set_async_exception(self.target, None)  # drop one scheduled but not yet raised


def _set_async_exception(thread_id: int, exception_type: type[BaseException] | None) -> None:
    """Schedule `exception_type` to be raised in the thread (None cancels a scheduled one)."""
    exception = ctypes.py_object(exception_type) if exception_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exception)
