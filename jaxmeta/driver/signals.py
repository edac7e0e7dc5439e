"""Ctrl-C / SIGTERM as "finish this meta-iteration, checkpoint, then stop"."""
from __future__ import annotations

import contextlib
import signal
import threading


class StopRequest:
    """Set by the first SIGINT/SIGTERM. A second one raises KeyboardInterrupt at once,
    except inside `protect()` (a checkpoint being written), where it waits for the end
    of the block so that no file is left half-written."""

    def __init__(self):
        self.signum: int | None = None
        self._protected = 0
        self._pending = False

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _on_signal(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        elif self._protected:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def protect(self):
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1
        if self._pending and not self._protected:
            self._pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True):
    """Yield a `StopRequest` that SIGINT/SIGTERM set while the block runs.

    Handlers are installed only in the main thread and only when `enabled`; the
    previous handlers are restored on exit.
    """
    stop = StopRequest()
    old = {}
    if enabled and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, stop._on_signal)
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
