"""Disk full, permission denied, read-only filesystem: recognised wherever they surface (an
OSError, or a message from Orbax/TensorStore's C++ writers, possibly wrapped or grouped) and
turned into one line naming the path, what was being written, what is intact, what to do."""

from __future__ import annotations

import errno
import re
from typing import Any

# errno -> (what happened, what to do)
KINDS = {
    errno.ENOSPC: ("the disk is full", "free space (or set a larger disk), then run the same "
                   "command again"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space, then run the same command again"),
    errno.EACCES: ("permission denied", "make the folder writable for this user, or use "
                   "another one"),
    errno.EPERM: ("operation not permitted", "make the folder writable for this user, or use "
                  "another one"),
    errno.EROFS: ("the filesystem is read-only", "use a writable folder"),
}
# The same faults as C++ writers (TensorStore, used by Orbax) spell them.
MESSAGES = {"no space left on device": errno.ENOSPC, "disk quota exceeded": errno.EDQUOT,
            "permission denied": errno.EACCES, "read-only file system": errno.EROFS}


class StorageError(RuntimeError):
    """A write that the storage refused; `str()` is the one line a user sees."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.errno = code


def _chain(e: BaseException) -> list[BaseException]:
    """`e`, its causes and contexts, and the members of exception groups, each once."""
    out, todo = [], [e]
    while todo:
        x = todo.pop()
        if x is None or any(x is y for y in out):
            continue
        out.append(x)
        todo += [x.__cause__, x.__context__, *getattr(x, "exceptions", ())]
    return out


def _classify(e: BaseException) -> tuple[int, str | None] | None:
    """(errno, path or None) when `e` is one of the storage faults."""
    if isinstance(e, OSError) and e.errno in KINDS:
        return e.errno, e.filename
    text = str(e).lower()
    for needle, code in MESSAGES.items():
        if needle in text:
            found = re.search(r'(?:file|directory|path)\s+"([^"]+)"', str(e))
            return code, found.group(1) if found else None
    return None


def storage_error(e: BaseException, *, writing: str = "a file", intact: str = "",
                  path: Any = None) -> StorageError | None:
    """The one-line StorageError for `e` (or anything in its chain), or None if it is not a
    storage fault. `writing` says what was being written, `intact` what is kept."""
    for x in _chain(e):
        if isinstance(x, StorageError):
            return x
        found = _classify(x)
        if found is not None:
            code, where = found
            what, todo = KINDS[code]
            where = where or path
            kept = f" Intact: {intact}." if intact else ""
            return StorageError(code, f"writing {writing}{f' ({where})' if where else ''} "
                                      f"failed: {what}.{kept} To go on: {todo}.")
    return None
