"""SIGINT and SIGTERM as one exception, so that a command ends with one line and exit 128 + N.

Raised in the main thread at the next bytecode, the exception unwinds through every `finally`:
atomic writers delete their temporary files and the prefetch pool is shut down, so nothing
half-written is left. It derives from BaseException so that no `except Exception` swallows it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The process was asked to stop by `signum`."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        """130 for SIGINT, 143 for SIGTERM: the shell's convention."""
        return 128 + self.signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; the old handlers come back after.
    Outside the main thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
