"""Stopping a command on SIGTERM or Ctrl-C: unwind, so that its Dask cluster and temporary Prefect
server stop and partial outputs are removed, then exit with 128 + the signal's number.

Python's default SIGTERM ends the process at once: no exit handler runs, and the temporary
Prefect server, a process of its own, outlives the run. Exceptions raised by a signal handler can
also be wrapped into ordinary errors by the code they interrupt (pydantic's serializers do this,
and Prefect serializes settings for every task it submits); recording the signal lets the command
line report the stop as a stop, whatever error it became.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_HANDLERS: dict[int, Any] = {
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGINT: signal.default_int_handler,
}

received: int | None = None
"""The signal that stopped the command, once one did."""

handled: set[int] = set()
"""The signals ``exits_on_signals`` handles now."""


def exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Record the signal and raise ``SystemExit``; a second signal acts as Python's default.

    Unless logs were asked for (level INFO), the errors that unwinding provokes (Prefect's
    crashed run, Dask's closing comms) are not logged: the stop is reported once.
    """
    global received
    received = signum
    signal.signal(signum, DEFAULT_HANDLERS[signum])
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.disable(logging.CRITICAL)
    sys.exit(128 + signum)


@contextmanager
def exits_on_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGINT with ``exit_on_signal`` within the block, unless this is not
    the main thread or the program has its own handlers (or ignores a signal)."""
    global received
    received = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = {s for s in STOP_SIGNALS if signal.getsignal(s) is DEFAULT_HANDLERS[s]}
    for signum in mine:
        signal.signal(signum, exit_on_signal)
    handled.update(mine)
    try:
        yield
    finally:
        handled.difference_update(mine)
        if received is not None:
            logging.disable(logging.NOTSET)
        for signum in mine:
            signal.signal(signum, DEFAULT_HANDLERS[signum])


def reclaim_sigterm() -> None:
    """Put ``exit_on_signal`` back as the SIGTERM handler where ``exits_on_signals`` installed it.

    Prefect's flow engine swaps in its own handler for the flow run, which raises an exception
    that is not recorded; Prefect restores the previous handler when the run ends.
    """
    if signal.SIGTERM in handled and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, exit_on_signal)
