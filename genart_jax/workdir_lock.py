"""One training run per workdir: `WORKDIR/.lock`, held with an exclusive `flock` for the whole
run and naming its holder (host, pid, start time). The kernel drops a flock when its process
dies, however it dies, so a lock left by a dead run is simply taken over; a second live run
stops at once. Multi-process runs take it on process 0 only (one lock per run); read-only
commands (`sample`, `eval`, `export`) never take it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"


class WorkdirBusy(RuntimeError):
    """Another live run holds the workdir."""


def holder_info() -> dict[str, Any]:
    """Who holds the lock: written into the lock file for the next would-be holder to read."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


class WorkdirLock:
    """Context manager holding `workdir`'s lock; `enabled=False` holds nothing (processes
    other than 0 of a multi-process run)."""

    def __init__(self, workdir: str | Path, enabled: bool = True):
        self.path = Path(workdir) / LOCK_FILE
        self.enabled = enabled
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        if not self.enabled or self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise WorkdirBusy(
                f"{self.path.parent} is in use by another training run ({holder}); wait for "
                f"it, stop it, or use another --workdir (sample/eval/export work beside it)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_info()) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (the file stays: deleting it would race a new holder)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
