"""History files (`metrics.jsonl`, a feedback session's `history.jsonl`, ...): one JSON object
per line, appended and flushed line by line, so a kill or a full disk can at worst tear the
last line; a reader tolerates and reports that torn line; every rewrite is atomic (a
temporary file renamed over the old one), so a kill during a rewrite keeps the old file."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


class HistoryError(ValueError):
    """A history file damaged before its last line (not what an interrupted append leaves)."""


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append `record` as one JSON line and flush it to the OS. A torn last line (no newline:
    an interrupted append, never a record; `read_records` reports it) is cut off first, so
    the file stays a clean list of records."""
    path = Path(path)
    with open(path, "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(max(0, end - 65536))
            tail = f.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                f.truncate(end - len(tail) + cut + 1 if cut >= 0 else
                           (0 if end <= 65536 else end))
        f.write((json.dumps(record) + "\n").encode())
        f.flush()


def read_records(path: str | Path, *, warn: Callable[[str], None] | None = None
                 ) -> list[dict[str, Any]]:
    """The records of a history file ([] if absent). A torn or unreadable line is skipped and
    reported through `warn` (default: one line on stderr) when it is the last one; earlier
    damage raises HistoryError naming the line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    records, bad = [], []
    for num, line in numbered:
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            bad.append(num)
            continue
        records.append(rec)
    torn = [n for n in bad if n == numbered[-1][0]]
    early = [n for n in bad if n not in torn]
    if early:
        raise HistoryError(f"{path}: line(s) {', '.join(map(str, early))} of {len(lines)} are "
                           f"not JSON records (damaged by hand or by another program?); move "
                           f"the file aside or delete those lines")
    if torn:
        (warn or _stderr)(f"{path}: ignoring its torn last line {torn[0]} (an interrupted "
                          f"write); {len(records)} records kept")
    return records


def rewrite_records(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace the file's content by `records`, atomically."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it, flushed, then renamed: a
    reader or a crash sees the old content or the new, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _stderr(text: str) -> None:
    print(f"genart: warning: {text}", file=sys.stderr, flush=True)
