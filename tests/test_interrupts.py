"""Signals that end a run: recorded, never ignored, held back while a lab is torn down
(issue 16, items 1 and 3). The lab-building versions of these are tests/e2e/test_signals.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from harness import interrupts
from harness.lab.base import LabBase


@pytest.fixture
def installed() -> Iterator[None]:
    """The CLI's handlers for the test, the test process's own back after it."""
    saved = {sig: signal.getsignal(sig) for sig in interrupts.SIGNALS}
    interrupts.install()
    yield
    interrupts.clear()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _signal_self(sig: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), sig)
    # the handler runs at the next check for signals; give it one
    for _ in range(1000):
        pass


class _Swallower:
    """Raises where Python swallows the exception: a signal handled in ``__del__`` is
    "Exception ignored in ..." (as in logging's at-fork callback)."""

    def __del__(self) -> None:
        _signal_self(signal.SIGTERM)


@pytest.mark.usefixtures("installed")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # the swallowed one
def test_a_signal_is_never_ignored_and_a_lost_interrupt_is_raised_at_the_next_check() -> None:
    with pytest.raises(KeyboardInterrupt):
        _signal_self()
    for sig in interrupts.SIGNALS:
        assert signal.getsignal(sig) not in (signal.SIG_IGN, signal.SIG_DFL)
    interrupts.clear()
    interrupts.check()                    # nothing came: a safe point passes

    _Swallower()                          # dropped at once; its interrupt is swallowed
    assert interrupts.received() == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()
    with pytest.raises(KeyboardInterrupt):   # and Ctrl-C still works
        _signal_self()


@pytest.mark.usefixtures("installed")
def test_a_signal_inside_deferred_waits_for_the_block_to_end() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        _signal_self()
        interrupts.check()                # no safe point inside a deferred block
        with interrupts.deferred():
            _signal_self()                # a second one: remembered, raised once, at the end
        done.append("inner")
        done.append("rest")
    assert done == ["inner", "rest"]


def test_deferred_stands_in_for_python_s_default_handler() -> None:
    # Python's own handler, whatever an earlier in-process cli.main() installed
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _deferred_stands_in()
    finally:
        signal.signal(signal.SIGINT, before)


def _deferred_stands_in() -> None:
    interrupts.clear()
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        _signal_self()
        done.append("after")
    assert done == ["after"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert interrupts.received() is None        # acted on: the next run starts clean


class _Lab(LabBase):
    def _build(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["cli", "library"])
def test_a_signal_during_teardown_cannot_cut_it_short(mode: str, request: Any) -> None:
    if mode == "cli":
        request.getfixturevalue("installed")
    lab = _Lab()
    released = []
    for name in ("folder", "namespace", "account", "server"):
        lab.on_close(name, lambda name=name: released.append(name))
    lab.on_close("sessions", lambda: (_signal_self(), released.append("sessions")))
    lab.on_close("fault", lambda: (_signal_self(signal.SIGTERM if mode == "cli" else signal.SIGINT),
                                   released.append("fault")))
    with pytest.raises(KeyboardInterrupt):
        lab.close()
    assert released == ["fault", "sessions", "server", "account", "namespace", "folder"]


@pytest.mark.usefixtures("installed")
def test_a_failed_step_and_a_signal_during_teardown_end_as_an_interrupt() -> None:
    lab = _Lab()
    released = []
    lab.on_close("folder", lambda: released.append("folder"))
    lab.on_close("broken", lambda: (_signal_self(), 1 / 0))
    with pytest.raises(KeyboardInterrupt):
        lab.close()
    assert released == ["folder"]


def test_a_signal_after_the_run_ended_keeps_the_runs_exit_code_and_says_so() -> None:
    """After ``settle`` (the CLI's last step) a signal during the interpreter's exit does not
    kill the process by its default effect (exit -2): the run's own code stands."""
    import subprocess
    import sys

    code = ("import os, signal, sys, time\n"
            "from harness import interrupts\n"
            "interrupts.install(); interrupts.settle()\n"
            "os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.05); sys.exit(1)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count(interrupts.LATE_NOTE.decode().strip()) == 2, done.stderr
