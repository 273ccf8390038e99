"""Ctrl-C and SIGTERM: recorded, acted on at once, held back while a lab is torn down.

``connchaos`` ends a run on SIGINT or SIGTERM by unwinding through every ``finally`` (the
lab's teardown among them) and exiting 130. Three rules make that reliable:

- The handler records the signal before it raises ``KeyboardInterrupt``. Python swallows an
  exception raised where it cannot propagate (an at-fork callback, a ``__del__``: "Exception
  ignored in ..."), so the record stays until the run acts on it: ``check`` at the runner's
  safe points raises again, and the CLI ends 130 if a signal came, whatever else happened.
- Signals are never ignored: a later Ctrl-C works as the first did.
- Inside ``deferred`` (a lab's teardown, and the short build steps that hand work to a child
  process and must register its undo first) a signal only sets the record; the block runs to
  its end and raises ``KeyboardInterrupt`` then. A second Ctrl-C during teardown is
  remembered, never lost, and cannot cut the teardown short.

Signal handlers run in the main thread only, so this is the main thread's business:
``deferred`` in another thread changes nothing.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    received: int | None = None     # a signal the run has not acted on yet (its raise may be lost)
    held: int | None = None         # a signal that arrived inside ``deferred``
    depth = 0                       # how many ``deferred`` blocks the main thread is in
    settled = False                 # ``settle`` has registered its atexit step


_state = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    _state.received = signum
    if _state.depth:
        _state.held = signum     # raised when the outermost deferred block ends
        return
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM through the recording handler (the CLI, at its start)."""
    clear()
    for sig in SIGNALS:
        signal.signal(sig, _handler)


LATE_NOTE = b"connchaos: signal after the run had ended; the exit code is the run's own\n"


def _late(signum: int, frame: FrameType | None) -> None:
    os.write(2, LATE_NOTE)


def settle() -> None:
    """The run has ended and everything it made is gone: a signal from now on (while the
    interpreter exits: threads joined, atexit) changes nothing, and says so on stderr (in the
    interpreter's last moments, after atexit, silently), instead of killing the process by
    its default effect (exit -2 rather than the run's code)."""
    for sig in SIGNALS:
        signal.signal(sig, _late)
    if _state.settled:
        return
    _state.settled = True
    # The interpreter's finalization puts back SIG_DFL where a Python handler was set, and a
    # signal then would kill the process (-2); an ignored one it leaves alone. atexit runs
    # just before that.
    atexit.register(_ignore)


def _ignore() -> None:
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def received() -> int | None:
    """The signal that came and has not been cleared, if any."""
    return _state.received


def clear() -> None:
    """Forget the signals that came (the caller acted on them: ``connchaos up`` ends on one)."""
    _state.received = _state.held = None


def check() -> None:
    """A safe point: raise ``KeyboardInterrupt`` if a signal came whose own raise was lost
    (swallowed where it was raised). A raise that propagated never reaches a safe point."""
    if _state.received is not None and not _state.depth:
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end whatever signal comes; one that came raises
    ``KeyboardInterrupt`` when the outermost block ends (replacing an exception the block
    raised: the interrupt decides the exit code). Where Python's default SIGINT handler is in
    place (the library used without the CLI), the recording one stands in for the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    standing_in = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if standing_in:
        signal.signal(signal.SIGINT, _handler)
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if standing_in:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if not _state.depth and _state.held is not None:
            _state.held = None
            if standing_in:   # nobody else holds the record: it is acted on here
                _state.received = None
            raise KeyboardInterrupt
