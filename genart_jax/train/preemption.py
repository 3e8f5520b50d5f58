"""SIGTERM / SIGINT handling: the first signal asks the loop to finish its step, write a
checkpoint and exit; a second one exits at once (checkpoints are written to a temporary folder
and renamed when complete, so an exit at any moment leaves no half checkpoint behind)."""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
    """Context manager; `signum` is the first signal received, or None."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None:
            print(f"\nsignal {signum} again: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\nsignal {signum}: finishing this step and writing a checkpoint (send it again "
              f"to exit at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
