"""TensorBoard event files of a training run, in `WORKDIR/tensorboard/` (process 0 only).

What is written: every field of a `metrics.jsonl` record as a scalar at its step (same names),
the sample grids the loop writes under `samples/` as images (the same PNG bytes; tag `samples`,
a VAE's extra grids `samples/reconstructions` and `samples/interpolation`), and the resolved
config as text (tag `config`, shown as `config/text_summary`, at the step each run segment
starts from).

The writer is tensorboardX's synchronous event-file writer (`EventsWriter`, its summary protos):
pure Python over protobuf, no TensorFlow and no PyTorch at train time. Its `SummaryWriter` is
not used: that one queues events to a background thread whose `flush()` does not wait for the
queue, so a log point could not be made durable; here every log point is written and flushed
before the loop goes on, so a kill loses nothing that was logged.

Resume without duplicate steps (as `metrics.jsonl` is cut back to the checkpoint): a run
segment starting from checkpoint S first rewrites the earlier event files without the events
past S (a killed run logs past its last checkpoint), and without a `config` text at S (the new
segment writes its own), atomically (a temporary file renamed over the old one); files with
nothing to drop are left alone. Each segment then writes a new event file that starts with a
`SessionLog.START` at step S + 1, TensorBoard's own restart marker, so a TensorBoard that was
already showing the orphaned steps drops them. A value whose tag already has that step (the
final grid of a finished run started again) is not written twice.
"""

from __future__ import annotations

import numbers
import os
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

LOG_DIR = "tensorboard"
CONFIG_TAG = "config"
SAMPLES_TAG = "samples"
_TEXT_SUFFIX = "/text_summary"  # tensorboardX's text summaries name their tag TAG/text_summary
_HEADER = 12  # a record: u64 length, u32 masked CRC of the length, data, u32 masked CRC of data
_FOOTER = 4


def _import_tensorboardx() -> tuple[Any, str | None]:
    """tensorboardX's pieces this module uses, or (None, why not).

    `import tensorboardX` imports PyTorch whenever it is installed (for `SummaryWriter`'s
    tensor checks, which are not used here): two seconds and several hundred MB in a JAX
    process. It is hidden during the import unless already imported; tensorboardX goes on
    without it."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # `import torch` raises ImportError
    try:
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.record_writer import masked_crc32c
    except Exception as e:  # not installed (ImportError), too old for this protobuf (TypeError)
        return None, f"{type(e).__name__}: {e}"
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return (summary, EventsWriter, event_pb2, summary_pb2, masked_crc32c), None


def event_files(logdir: str | Path) -> list[Path]:
    """The event files in `logdir`, in the order TensorBoard reads them (by name)."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        return []
    return sorted(p for p in logdir.iterdir() if "tfevents" in p.name and p.is_file()
                  and not p.name.startswith("."))


def _records(f, check_length: Callable[[bytes, int], bool]) -> Iterator[tuple[int, int, bytes]]:
    """(offset, end, data) of each whole record of an open event file; stops at a torn record
    (a kill mid-write) or a length that fails its checksum."""
    while True:
        start = f.tell()
        head = f.read(_HEADER)
        if len(head) < _HEADER:
            return
        (n,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
        if not check_length(head[:8], crc):
            return
        data = f.read(n)
        if len(data) < n or len(f.read(_FOOTER)) < _FOOTER:
            return
        yield start, start + _HEADER + n + _FOOTER, data


def truncate_after(logdir: str | Path, step: int, restart_tags: Iterable[str] = (),
                   tbx: Any = None) -> dict[str, int]:
    """Rewrite the event files of `logdir` without the events past `step` (and without values
    at `step` itself of `restart_tags`), each atomically; files with nothing to drop (and no
    torn tail) are not touched. Returns the last step kept per tag."""
    if tbx is None:
        tbx, why = _import_tensorboardx()
        if tbx is None:
            raise ImportError(why)
    _, _, event_pb2, _, masked_crc32c = tbx
    restart = set(restart_tags)

    def length_ok(raw: bytes, crc: int) -> bool:
        return masked_crc32c(raw) == crc

    def kept(data: bytes) -> tuple[bool, dict[str, int]]:
        try:
            event = event_pb2.Event.FromString(data)
        except DecodeError:  # a damaged record: dropped like a torn one
            return False, {}
        if event.HasField("file_version"):
            return True, {}
        tags = [v.tag for v in event.summary.value] if event.HasField("summary") else []
        if event.step > step or (event.step == step and restart.intersection(tags)):
            return False, {}
        return True, {t: event.step for t in tags}

    last: dict[str, int] = {}
    for path in event_files(logdir):
        keep: list[tuple[int, int]] = []
        dropped = False
        with open(path, "rb") as f:
            for start, end, data in _records(f, length_ok):
                ok, tags = kept(data)
                if ok:
                    keep.append((start, end))
                    for t, s in tags.items():
                        last[t] = max(last.get(t, s), s)
                else:
                    dropped = True
            size = f.seek(0, os.SEEK_END)
        if not dropped and (keep[-1][1] if keep else 0) == size:
            continue
        tmp = path.with_name(f".genart-rewrite-{os.getpid()}.tmp")  # no "tfevents": not read
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                for start, end in keep:
                    src.seek(start)
                    dst.write(src.read(end - start))
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return last


class TensorBoardWriter:
    """Scalars, sample grids and the config of one run segment as TensorBoard events.

    Off (every method does nothing) when `enabled` is false (processes > 0, or
    `train.tensorboard=false`), or when tensorboardX is not installed: then `log` is told so
    once and training goes on without it."""

    def __init__(self, logdir: str | Path, *, start: int, enabled: bool,
                 log: Callable[[str], None] = print):
        self.logdir = Path(logdir)
        self._events = None
        if not enabled:
            return
        self._tbx, why = _import_tensorboardx()
        if self._tbx is None:
            log(f"TensorBoard event files are off: tensorboardX cannot be imported ({why}); "
                f"`pip install -U tensorboardX` to get them. metrics.jsonl and samples/ are "
                f"written as always")
            return
        _, EventsWriter, event_pb2, _, _ = self._tbx
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._last = truncate_after(self.logdir, start, [CONFIG_TAG + _TEXT_SUFFIX], self._tbx)
        # Names sort by creation time (tensorboardX names a file by the second it was made;
        # the suffix orders two made in the same second), as TensorBoard reads them in order.
        self._events = EventsWriter(str(self.logdir / "events"), f".{time.time_ns()}")
        self._events.write_event(event_pb2.Event(
            wall_time=time.time(), step=start + 1,
            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        self._events.flush()

    @property
    def enabled(self) -> bool:
        return self._events is not None

    def _write(self, step: int, values: list[Any]) -> None:
        """One event with the summary values whose tag has no value at `step` or later yet,
        flushed to the file."""
        fresh = [v for v in values if step > self._last.get(v.tag, -1)]
        if not fresh:
            return
        for v in fresh:
            self._last[v.tag] = step
        _, _, event_pb2, summary_pb2, _ = self._tbx
        self._events.write_event(event_pb2.Event(
            wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=fresh)))
        self._events.flush()

    def scalars(self, step: int, record: dict[str, Any]) -> None:
        """Every number of a metrics record (but the step itself) as a scalar at `step`."""
        if self._events is None:
            return
        summary_pb2 = self._tbx[3]
        self._write(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                           for k, v in record.items()
                           if k != "step" and isinstance(v, numbers.Real)])

    def images(self, step: int, paths: Iterable[str | Path]) -> None:
        """Sample grids written by the loop, their PNG bytes as they are: the first as
        `samples`, each further one (`..._reconstructions.png`) as `samples/reconstructions`."""
        if self._events is None:
            return
        from PIL import Image

        summary_pb2 = self._tbx[3]
        values, paths = [], [Path(p) for p in paths]
        for p in paths:
            png = p.read_bytes()
            with Image.open(p) as img:
                width, height = img.size
                channels = len(img.getbands())
            extra = p.stem[len(paths[0].stem) + 1:] if p != paths[0] else ""
            values.append(summary_pb2.Summary.Value(
                tag=f"{SAMPLES_TAG}/{extra}" if extra else SAMPLES_TAG,
                image=summary_pb2.Summary.Image(height=height, width=width, colorspace=channels,
                                                encoded_image_string=png)))
        self._write(step, values)

    def config(self, step: int, config_json: str) -> None:
        """The resolved config (its JSON, as `config.json`) as text at `step`."""
        if self._events is None:
            return
        summary = self._tbx[0]
        self._write(step, list(summary.text(CONFIG_TAG, f"```json\n{config_json}\n```").value))

    def close(self) -> None:
        if self._events is not None:
            events, self._events = self._events, None
            events.close()
