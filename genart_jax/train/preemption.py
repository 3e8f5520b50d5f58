"""SIGTERM / SIGINT handling: the first signal asks the loop to finish its call, write a
checkpoint and exit; a second one exits at once (checkpoints are written to a temporary folder
and renamed when complete, so an exit at any moment leaves no half checkpoint behind).

In a multi-process run the first signal is also announced to every process
(`parallel.announce_preemption`, through JAX's preemption sync manager), so that all of them
save at the same call end, whichever process got the signal (`parallel.preemption_sync`)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
    """Context manager; `signum` is the first signal received, or None. `on_signal(signum)`
    runs once, on the first signal; `step` (set by the loop) is named in the message."""

    def __init__(self, on_signal: Callable[[int], None] | None = None):
        self.signum: int | None = None
        self.step: int | None = None
        self._on_signal = on_signal
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None:
            print(f"\nsignal {signum} again: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        at = "" if self.step is None else f" at step {self.step}"
        print(f"\nsignal {signum}{at}: finishing this step and writing a checkpoint (send it "
              f"again to exit at once)", file=sys.stderr, flush=True)
        if self._on_signal is not None:
            self._on_signal(signum)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
