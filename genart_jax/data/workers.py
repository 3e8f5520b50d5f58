"""Reader worker processes that hand batches over in shared memory.

A pool of `workers` spawned processes reads whole batches (`ReadBatches.into`) straight into
fixed slots of one shared-memory file; only (element, slot) pairs travel, 17 bytes through a
pipe per worker, never the pixels. Element k goes to worker k % workers and slot k % slots; the
parent takes the elements back in order, copies each batch out of its slot (one memcpy) and
gives the slot its next element, so at most `slots` batches are ever in flight and the shared
memory is a fixed `slots x batch` bytes.

This replaces grain's `mp_prefetch`, which pickled each returned batch (1.5-25 MB at 64-256 px,
batch 128) through a pipe: per batch a pickle copy, a pipe write and read in 64 KiB pieces and
an unpickle copy, on the same 2 cores that read (benchmarks/worker_breakdown.py measures it).

The shared file lives in /dev/shm and is unlinked as soon as every worker has mapped it, so a
killed run leaves nothing behind; workers exit when their parent does.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import pickle
import signal
import struct
import tempfile
import time
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

PAGE = mmap.PAGESIZE


def _round_up(n: int, to: int = PAGE) -> int:
    return -(-n // to) * to


class SlotLayout:
    """Where one element (`group` batches of `local` images of `shape`, and their labels) lies
    in a slot: images uint8 (group, local, *shape) at 0, labels int32 (group, local) after them
    on the next page; slots are whole pages apart."""

    def __init__(self, group: int, local: int, shape: tuple[int, ...]):
        self.image_shape = (group, local, *shape)
        self.label_shape = (group, local)
        self.image_bytes = int(np.prod(self.image_shape))
        self.label_offset = _round_up(self.image_bytes)
        self.slot_bytes = _round_up(self.label_offset + 4 * group * local)

    def views(self, buf: Any, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of `slot` as arrays over `buf` (no copy)."""
        base = slot * self.slot_bytes
        images = np.frombuffer(buf, np.uint8, self.image_bytes, base).reshape(self.image_shape)
        labels = np.frombuffer(buf, np.int32, int(np.prod(self.label_shape)),
                               base + self.label_offset).reshape(self.label_shape)
        return images, labels


def _shared_dir() -> str | None:
    """/dev/shm where it is a writable folder (Linux), else the default temporary folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


TASK = struct.Struct("<qq")  # (element, slot)


def _worker(read: Any, layout: SlotLayout, path: str, size: int, tasks: Any,
            results: Any) -> None:
    """A worker's loop: map the shared file, say ready (b"R"), then for each task (k, slot)
    read element k into the slot and answer b"K" + (k, slot), or b"E" + the pickled error;
    stop at an empty task or when the parent is gone (its end of the pipe closed)."""
    from genart_jax import host_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # Reused heap, not a fresh mmap per record: array_record returns each record as a new
    # bytes object (196 KB at 256 px, above malloc's mmap threshold), and without this a
    # worker took ~12,000 page faults (~35 ms of kernel time) per 256 px batch of 128.
    host_memory.keep_freed_memory_unless_opted_out()
    with open(path, "r+b") as f:
        buf = mmap.mmap(f.fileno(), size)
    results.send_bytes(b"R")
    while True:
        try:
            task = tasks.recv_bytes()
        except (EOFError, OSError):  # the parent is gone: nobody will read our work
            return
        if not task:
            return
        k, slot = TASK.unpack(task)
        try:
            images, labels = layout.views(buf, slot)
            read.into(k, images, labels)
            del images, labels
            reply = b"K" + task
        except Exception as e:  # handed to the parent, raised at element k
            try:
                reply = b"E" + pickle.dumps(e)
            except Exception:
                reply = b"E" + pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))
        try:
            results.send_bytes(reply)
        except (BrokenPipeError, OSError):
            return


def _shutdown(procs: list, tasks: list, results: list, buf: mmap.mmap, path: str) -> None:
    """Stop the workers (an empty task each, then terminate whoever lingers), free the shared
    file."""
    for conn in tasks:
        try:
            conn.send_bytes(b"")
        except (BrokenPipeError, OSError):
            pass
        conn.close()
    procs = [p for p in procs if p.pid is not None]  # started ones
    deadline = time.monotonic() + 5.0
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5.0)
    for conn in results:
        conn.close()
    try:
        buf.close()
    except BufferError:  # a view still exported: the mapping goes when it is collected
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SharedMemoryPool:
    """Yields `read`'s elements 0, 1, 2, ... in order, each read by one of `workers` processes
    into a shared-memory slot and copied out: {"image": uint8 (group, local, *shape), "label":
    int32 (group, local)}. Element k is read by worker k % workers into slot k % slots, where
    `slots` (rounded up to a multiple of `workers`) bounds the elements in flight; each worker
    has its own pair of pipes, so results come back in order and a dead worker is an EOF, not
    a hang. `read` must be picklable and have `group` and `into(k, images, labels)`; `shape`
    is one image's."""

    def __init__(self, read: Any, *, workers: int, slots: int, shape: tuple[int, ...],
                 local: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.layout = SlotLayout(read.group, local, tuple(shape))
        self.slots = _round_up(max(int(slots), workers), workers)
        size = self.slots * self.layout.slot_bytes
        fd, self.path = tempfile.mkstemp(prefix="genart-batches-", dir=_shared_dir())
        try:
            os.ftruncate(fd, size)
            self._buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        ctx = mp.get_context("spawn")  # fork is unsafe once JAX's threads run
        self._procs, self._tasks, self._results = [], [], []
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._tasks,
                                           self._results, self._buf, self.path)
        for i in range(workers):
            task_r, task_w = ctx.Pipe(duplex=False)
            result_r, result_w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, daemon=True, name=f"genart-reader-{i}",
                            args=(read, self.layout, self.path, size, task_r, result_w))
            p.start()
            task_r.close()  # the child's ends: closed here, so either side's exit is an EOF
            result_w.close()
            self._procs.append(p)
            self._tasks.append(task_w)
            self._results.append(result_r)
        self._ready = 0
        self._next = 0  # the next element to yield
        for k in range(self.slots):
            self._send(k)

    def _send(self, k: int) -> None:
        try:
            self._tasks[k % len(self._procs)].send_bytes(TASK.pack(k, k % self.slots))
        except (BrokenPipeError, OSError):  # the worker died: its next receive says how
            pass

    def _receive(self, w: int) -> bytes:
        """The next message of worker w; its exit is an error naming its exit code."""
        try:
            return self._results[w].recv_bytes()
        except (EOFError, OSError):
            p = self._procs[w]
            p.join(timeout=5.0)
            raise RuntimeError(
                f"reader worker {p.name} (pid {p.pid}) exited with code {p.exitcode} while "
                f"reading batches (its error, if any, is printed above; -9: killed, e.g. out "
                f"of memory)") from None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if not self._finalizer.alive:
            raise StopIteration
        k = self._next
        w = k % len(self._procs)
        try:
            msg = self._receive(w)
            if msg == b"R":  # the worker's first message: it has mapped the shared file
                self._ready += 1
                if self._ready == len(self._procs):  # all mapped: the name is not needed
                    os.unlink(self.path)
                msg = self._receive(w)
        except BaseException:
            self.close()
            raise
        if msg[:1] == b"E":
            self.close()
            raise pickle.loads(msg[1:])
        done, slot = TASK.unpack(msg[1:])
        assert (done, slot) == (k, k % self.slots), (done, slot, k)
        images, labels = self.layout.views(self._buf, slot)
        batch = {"image": images.copy(), "label": labels.copy()}
        del images, labels
        self._send(k + self.slots)  # the slot is free: the next element for it goes there
        self._next += 1
        return batch

    def close(self) -> None:
        """Stop the workers and free the shared memory (also done at collection and exit)."""
        self._finalizer()
