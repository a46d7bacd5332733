"""A stop by SIGTERM or Ctrl-C unwinds like an exception, is recorded, and is reported once."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator

import pytest

from geoseg import stopping


@pytest.fixture(autouse=True)
def default_handlers() -> Iterator[None]:
    previous = {s: signal.getsignal(s) for s in stopping.STOP_SIGNALS}
    for signum, handler in stopping.DEFAULT_HANDLERS.items():
        signal.signal(signum, handler)
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    logging.disable(logging.NOTSET)


def signalled(signum: int, unwinding: Callable[[], object] = lambda: None) -> None:
    """Send ``signum`` to this process within ``exits_on_signals``; call ``unwinding`` as the
    block unwinds."""
    with stopping.exits_on_signals():
        try:
            os.kill(os.getpid(), signum)
        finally:
            unwinding()


@pytest.mark.parametrize("signum", stopping.STOP_SIGNALS)
def test_a_signal_unwinds_the_block_with_exit_status_128_plus_its_number(signum: int) -> None:
    handlers_while_unwinding = []
    with pytest.raises(SystemExit) as stop:
        signalled(signum, lambda: handlers_while_unwinding.append(signal.getsignal(signum)))
    assert stop.value.code == 128 + signum
    # A second signal is Python's default again: it would end the process at once.
    assert handlers_while_unwinding == [stopping.DEFAULT_HANDLERS[signum]]
    assert stopping.received == signum
    assert signal.getsignal(signum) is stopping.DEFAULT_HANDLERS[signum]


def test_unwinding_errors_are_not_logged_unless_logs_were_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("geoseg.unwinding")
    with pytest.raises(SystemExit):
        signalled(signal.SIGTERM, lambda: logger.error("crashed"))
    logger.error("after the command")
    assert [r.message for r in caplog.records] == ["after the command"]


def test_a_program_s_own_handlers_are_left_alone() -> None:
    def own(signum: int, frame: object) -> None:
        raise LookupError(signum)

    signal.signal(signal.SIGTERM, own)
    with stopping.exits_on_signals():
        assert signal.getsignal(signal.SIGINT) is stopping.exit_on_signal
        stopping.reclaim_sigterm()
        assert signal.getsignal(signal.SIGTERM) is own
    with pytest.raises(LookupError):
        signalled(signal.SIGTERM)
    assert stopping.received is None


def test_sigterm_is_reclaimed_from_a_flow_engine_s_handler() -> None:
    def engine(signum: int, frame: object) -> None:
        raise LookupError(signum)

    with stopping.exits_on_signals():
        previous = signal.signal(signal.SIGTERM, engine)
        assert previous is stopping.exit_on_signal
        stopping.reclaim_sigterm()
        assert signal.getsignal(signal.SIGTERM) is stopping.exit_on_signal
    stopping.reclaim_sigterm()  # outside the block: nothing to reclaim
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
