"""Ctrl-C / SIGTERM as "finish this meta-iteration, checkpoint, then stop"."""
from __future__ import annotations

import contextlib
import signal
import threading


class StopRequest:
    """Set by the first SIGINT/SIGTERM; a second one raises KeyboardInterrupt at once."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True):
    """Yield a `StopRequest` that SIGINT/SIGTERM set while the block runs.

    Handlers are installed only in the main thread and only when `enabled`; the
    previous handlers are restored on exit.
    """
    stop = StopRequest()
    old = {}
    if enabled and threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            if stop.signum is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            stop.signum = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
