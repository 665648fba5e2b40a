"""Ctrl-C said in the command's own words only, whenever it comes.

A terminal's Ctrl-C sends SIGINT to every process of the command's group at once: this one, Dagster's
`tail` and `watch_orphans.py` helpers, step processes. Each Python among them prints a KeyboardInterrupt
traceback, and in this process the interrupt unwinds through whatever runs (SQLAlchemy closing Dagster's
SQLite connections logs one, finalizers and atexit callbacks print "Exception ignored in"). The command's
words go to stdout and migration.log; so, once SIGINT has arrived, whatever reaches stderr, from this
process or a child that shares it, is the interrupt's own unwinding and is dropped. The signal is seen
at C level (signal.set_wakeup_fd), whichever Python handler Dagster has installed meanwhile, before any
line its unwinding prints.
A KeyboardInterrupt stops a verb only before its run (nothing is written yet): from the run's end on, the
API holds it (held_once_run), so the words say what the run did, a committed load included.
This module is imported before anything heavy, so that an interrupt at start-up is handled as any other.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

INTERRUPTED = threading.Event()  # SIGINT has arrived: stderr is dropped from then on
_SIGNALS_READ = threading.Lock()  # reading the wakeup pipe and noting SIGINT are one step
# A child's traceback can reach the pipe before this process's own signal handler has run (2 cores, under
# load): a chunk is held this long for the signal before it is passed on (at 0.05 s an outside tester saw a
# helper's traceback pass in 1 of 60 tries).
SIGNAL_GRACE = 0.25
_terminal: int | None = None  # the original stderr, while fd 2 is the pipe


@contextlib.contextmanager
def quiet_after_interrupt() -> Iterator[None]:
    """Run the command with stderr (fd 2, so its children's too) passed through a thread that drops all of
    it once SIGINT has arrived, and SIGINT held (as interrupts_held) but where its verb works. On leaving,
    SIGINT is ignored (the command's outcome is said and logged), and stderr is the original again, or
    /dev/null after an interrupt, for what interpreter shutdown prints."""
    global _terminal
    signal.signal(signal.SIGINT, _noted)
    discard_closed_standard_streams()
    sys.stderr.flush()
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    _terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    closing = threading.Event()
    thread = threading.Thread(target=_forward, args=(read_end, wake_read, _terminal, closing), daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.flush()
        _note_signals(wake_read)
        signal.set_wakeup_fd(previous_wakeup)
        release_stderr()
        closing.set()
        with contextlib.suppress(BlockingIOError):
            os.write(wake_write, b"\0")  # wakes the thread: it passes on what is left, then ends
        thread.join(timeout=5)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """SIGINT only noted (INTERRUPTED), not raised, in this block (a finished verb saying its outcome), so that a
    KeyboardInterrupt never escapes the handler that says it. Only in the main thread, the one that receives
    signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _noted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _noted(_signo: int, _frame: FrameType | None) -> None:
    INTERRUPTED.set()


@contextlib.contextmanager
def interrupts_raised() -> Iterator[None]:
    """The verb's work, which SIGINT stops (KeyboardInterrupt), at once if it came while held."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def held_once_run() -> Iterator[Callable[[T], T]]:
    """Around a Dagster run and its result: before the run SIGINT stops the verb as it would have (nothing is
    written yet); during it, Dagster stops the steps (its own handler); from the moment the run has ended
    (the value passed to the yielded function) SIGINT is only noted, so the result that says what the run
    did, a committed load included, is built and returned."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda value: value
        return
    ended = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    terminate = signal.getsignal(signal.SIGTERM)  # Dagster gives SIGTERM the SIGINT handler it restores

    def handler(signo: int, frame: FrameType | None) -> None:
        if ended.is_set():
            INTERRUPTED.set()
        elif callable(previous):
            previous(signo, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def run_ended(value: T) -> T:
        ended.set()
        return value

    signal.signal(signal.SIGINT, handler)
    try:
        yield run_ended
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, terminate)


def release_stderr() -> None:
    """Give fd 2 back (also before an exec, whose image has no forwarding thread): the original stderr, or
    /dev/null once interrupted."""
    if INTERRUPTED.is_set():
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    elif _terminal is not None:
        os.dup2(_terminal, 2)


def _forward(read_end: int, wake_read: int, terminal: int, closing: threading.Event) -> None:
    """Pass stderr on until SIGINT; once `closing`, only what is there already (a process that outlives the
    command, such as multiprocessing's resource tracker, holds the pipe open)."""
    with os.fdopen(read_end, "rb", buffering=0) as lines:
        while True:
            ready, _, _ = select.select([wake_read, lines], [], [], 0 if closing.is_set() else None)
            if not ready:
                return
            if wake_read in ready or select.select([wake_read], [], [], SIGNAL_GRACE)[0]:
                _note_signals(wake_read)
            if lines not in ready:
                continue
            chunk = lines.read(65536)
            if not chunk:
                return
            if not INTERRUPTED.is_set():
                os.write(terminal, chunk)


def _note_signals(wake_read: int) -> None:
    with _SIGNALS_READ, contextlib.suppress(BlockingIOError):
        if signal.SIGINT in os.read(wake_read, 512):
            INTERRUPTED.set()


def discard_closed_standard_streams() -> None:
    """A command started with its output closed (`>&-`) writes it to /dev/null: Python leaves sys.stdout None
    (the migration crashed on it), and the next file opened would take descriptor 1, so a printed line
    would go into a database socket or the backup being written."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
            setattr(sys, name, open(fd, "w", encoding="utf-8", closefd=False))
