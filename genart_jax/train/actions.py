"""What the training loop does between compiled calls: each a small object, asked at every call
end by the driver (`train/loop.py`), tested alone (`tests/test_actions.py`).

- `InFlight`: the bound on calls queued ahead of the devices (`feed.CALLS_AHEAD`).
- `Throughput`: the first call's compile time and images/s between logged steps, time spent on
  saves and grids left out.
- `LogMetrics`: at logged steps, one record to metrics.jsonl, TensorBoard and the progress bar.
- `NonfinitePolicy`: `train.nonfinite=stop` raises `TrainingDiverged` at a logged step or before
  a save.
- `TimedSave`: whether `checkpoint.every_minutes` have passed since the last save.
- `StopAgreement`: the stop (signal) and timed-save decisions, the same on every process.
- `SaveCheckpoint`: every `checkpoint.every_steps`, and when stopping, timed or at the end.
- `WriteSamples`: the sample grids every `train.sample_every` and at the end.

As in clu's `periodic_actions` each is an object that knows when it is due; as in big_vision's
loop the driver asks `due` inline and calls the action, reading top to bottom. Unlike clu's,
they are asked once per call, not per step (a call never crosses a logged, sampled or saved
step, `feed.call_sizes`), they do not decide alone by time (a decision that depends on time or
signals is taken by all processes together, through `StopAgreement`, or a collective save would
hang), and a save and a grid at the same step share one host copy of the state.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

from genart_jax import checkpoint, history
from genart_jax.config import to_json
from genart_jax.data.convert import to_model_range_np
from genart_jax.train.feed import CALLS_AHEAD

NUM_REAL = 16  # training images kept for reconstruction grids


class TrainingDiverged(RuntimeError):
    """A loss or gradient norm became NaN or infinite (with train.nonfinite=stop)."""


def every(step: int, period: int) -> bool:
    """Whether `step` is a multiple of a positive `period` (0: never)."""
    return period > 0 and step % period == 0


class InFlight:
    """The metrics of the calls launched and not waited for: after launching a call, the host
    waits for the call `ahead` calls before it (see `feed.CALLS_AHEAD`)."""

    def __init__(self, ahead: int = CALLS_AHEAD, wait: Callable[[Any], Any] | None = None):
        self.ahead, self._wait, self._queue = ahead, wait, collections.deque()

    def launched(self, metrics: Any) -> None:
        self._queue.append(metrics)
        if len(self._queue) > self.ahead:
            (self._wait or jax.block_until_ready)(self._queue.popleft())


class Throughput:
    """Images per second between logged steps (big_vision's `Chrono`, smaller): the first call
    compiles and is timed apart (`compile_s`); time spent `aside` (saves, grids) is not
    training time."""

    def __init__(self, step: int, images_per_step: int,
                 clock: Callable[[], float] = time.perf_counter):
        self.images_per_step, self._clock = images_per_step, clock
        self.compile_s, self._t, self._step = 0.0, clock(), step

    def compiled(self, step: int) -> None:
        """The first call (waited for) ended at `step`: the time so far was its compile."""
        now = self._clock()
        self.compile_s, self._t, self._step = now - self._t, now, step

    def rate(self, step: int) -> float:
        """Images/s since the last logged step (or the first call), measured up to now."""
        now = self._clock()
        rate = (step - self._step) * self.images_per_step / max(now - self._t, 1e-9)
        self._t, self._step = now, step
        return rate

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """Time in this block does not count (not counted either where it raises: the loop
        ends then)."""
        t0 = self._clock()
        yield
        self._t += self._clock() - t0


class MetricsWriter:
    """Appends one JSON object per logged step to `metrics.jsonl` (process 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                     for k, v in record.items()}
            history.append_record(self.path, clean)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from),
        atomically; a torn last line is reported and dropped."""
        if self.enabled and self.path.is_file():
            records = history.read_records(self.path)
            history.rewrite_records(self.path, [r for r in records if r.get("step", 0) <= step])


class LogMetrics:
    """Every `every` steps and at `last_step`: the call's last-step metrics with images/s and
    the data epoch as one record, to metrics.jsonl (`writer`), TensorBoard (`tb`) and the
    progress bar's postfix (the `shown` pair of metrics)."""

    def __init__(self, every: int, last_step: int, writer: MetricsWriter, tb: Any, bar: Any,
                 shown: tuple[str, str], throughput: Throughput):
        self.every, self.last_step = every, last_step
        self.writer, self.tb, self.bar, self.shown = writer, tb, bar, shown
        self.throughput = throughput

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.last_step

    def __call__(self, step: int, metrics: dict[str, float], epoch: int) -> dict[str, Any]:
        rate = self.throughput.rate(step)
        record = {"step": step, **metrics, "images_per_sec": rate, "epoch": epoch}
        self.writer.write(record)
        self.tb.scalars(step, record)
        a, b = self.shown
        self.bar.set_postfix({a: f"{metrics[a]:.3f}", b: f"{metrics[b]:.3f}",
                              "img_s": f"{rate:.0f}"}, refresh=False)
        return record


class NonfinitePolicy:
    """`train.nonfinite`: with "stop", a NaN/Inf update seen at a logged step (its metrics) or
    in a state about to be saved raises `TrainingDiverged` (the latest checkpoint keeps the last
    good state); with "skip" the step has dropped such updates and training goes on."""

    def __init__(self, mode: str, to_host: Callable[[Any], Any]):
        self.stop, self.to_host = mode == "stop", to_host

    def check_logged(self, metrics: dict[str, float], state: Any) -> None:
        """At a logged step; the state is copied to the host (`to_host`) only to stop."""
        if metrics["nonfinite_count"] and self.stop:
            raise_diverged(self.to_host(state), metrics)

    def check_saving(self, host_state: Any) -> None:
        if self.stop and int(host_state.nonfinite_count):
            raise_diverged(host_state, {})


def raise_diverged(state: Any, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    shown = f"; non-finite at the logged step: {', '.join(bad)}" if bad else ""
    raise TrainingDiverged(
        f"a loss or gradient became NaN/Inf at step {int(state.first_nonfinite_step)} (its "
        f"update was not applied){shown}. The latest checkpoint holds the last good state. "
        f"Lower the learning rates, use model.dtype=float32, or set train.nonfinite=skip to "
        f"drop such updates and go on. Metrics: {metrics}")


class TimedSave:
    """Whether `minutes` (0: off) have passed since the last save, or since the start."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        self.minutes, self._clock = minutes, clock
        self._saved = clock()

    def due(self) -> bool:
        return self.minutes > 0 and self._clock() - self._saved >= 60 * self.minutes

    def saved(self) -> None:
        self._saved = self._clock()


class StopAgreement:
    """The decisions that depend on signals and time, taken by all processes together, or the
    collective save would hang: `decide` gives (stop, timed save) from this process's view.

    One process: its own view. Several: a signal to any process is agreed at every call end
    through JAX's preemption sync manager (`sync(call)`, true on all processes at the same
    call once any posted a notice; None where the manager is off), and at logged steps through
    `any_process` (a collective: true everywhere if true on any), which also catches a signal
    where the manager is off; a timed save is agreed at logged steps only. Every process makes
    the same collective calls in the same order whatever it saw (`sync` at every call, then
    `any_process` twice at logged steps), as the collectives require."""

    def __init__(self, processes: int, sync: Callable[[int], bool] | None,
                 any_process: Callable[[bool], bool]):
        self.multi, self.sync, self.any_process = processes > 1, sync, any_process

    def decide(self, call: int, logged: bool, signalled: bool, timed: bool
               ) -> tuple[bool, bool]:
        if not self.multi:
            return signalled, timed
        agreed = self.sync is not None and self.sync(call)
        if logged:
            return self.any_process(signalled) or agreed, self.any_process(timed)
        return agreed, False


class SaveCheckpoint:
    """A checkpoint (`checkpointer.save`) of a host state with the config and the data position
    in its meta, every `every` steps (0: only when stopping, timed or at the end); a diverged
    state is refused first (`policy`)."""

    def __init__(self, checkpointer: Any, cfg: Any, every: int, policy: NonfinitePolicy):
        self.checkpointer, self.cfg, self.every, self.policy = checkpointer, cfg, every, policy

    def due(self, step: int) -> bool:
        return every(step, self.every)

    def __call__(self, step: int, host_state: Any, position: Any) -> Path:
        self.policy.check_saving(host_state)
        meta = {"config": json.loads(to_json(self.cfg)), "data_position": position.to_dict()}
        return self.checkpointer.save(step, host_state, meta)

    def final(self, host_state: Any, position: Any) -> Path:
        """At the end: the state's step saved unless the newest checkpoint (once the saves in
        flight are complete) is of that step already; every save complete on return."""
        step = int(host_state.step)
        self.checkpointer.wait()
        if self.checkpointer.latest_step() != step:
            self(step, host_state, position)
        self.close()
        return checkpoint.checkpoint_dir(self.checkpointer.workdir) / str(step)

    def close(self) -> None:
        """Wait for the saves in flight (safe to call twice)."""
        self.checkpointer.close()


class WriteSamples:
    """The family's sample grids of a host state, `samples/step_NNNNNN.png` every `every`
    steps before `last_step` and `samples/final.png` at the end, also to TensorBoard; on
    process 0 only (`enabled`). `real` holds a few training images (reconstruction grids)."""

    def __init__(self, cfg: Any, write: Callable[..., list], folder: Path, tb: Any,
                 every: int, last_step: int, enabled: bool):
        self.cfg, self.write, self.folder, self.tb = cfg, write, folder, tb
        self.every, self.last_step, self.enabled = every, last_step, enabled

    def due(self, step: int) -> bool:
        return self.enabled and step < self.last_step and every(step, self.every)

    def __call__(self, step: int, host_state: Any, real: Any) -> None:
        self.tb.images(step, self.write(self.cfg, host_state,
                                        self.folder / f"step_{step:06d}.png", real))

    def final(self, step: int, host_state: Any, real: Any) -> list:
        grids = (self.write(self.cfg, host_state, self.folder / "final.png", real)
                 if self.enabled else [])
        self.tb.images(step, grids)
        return grids


def real_images(first: Any, resident: Any = None) -> tuple[Any, Any]:
    """(images in the model's range, labels) of the first `NUM_REAL` examples of a call's
    first host batch; `resident` is the split on the devices, whose batches are indices."""
    head = first["image"][0][:NUM_REAL]
    return (to_model_range_np(resident[head] if resident is not None else head),
            first["label"][0][:NUM_REAL])
