"""Feeding the compiled train step: how many steps each call runs, and the batches of each call
stacked and placed on the devices on a background thread, calls ahead of the step.

A run of N steps with `k` steps per call is cut into calls of k steps that never cross a
boundary (a logged, sampled or saved step, or the end), with the steps left before a boundary
run as one shorter call; so a run still ends at exactly N, and everything the loop does
between calls happens at the same steps as with one step per call.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from genart_jax.data import prefetch

# Steps per call where train.steps_per_call is 0, per backend. On XLA:CPU the step dominates
# and fusing does not pay for its extra compile: dcgan_digits' default run, interleaved A/B,
# benchmarks/results/cpu-2core-loop. On GPU/TPU a small model's step is about as long as the
# host's dispatch, which fusing removes (benchmarks/results/cpu-2core-loop: the tiny MLP GAN).
DEFAULT_STEPS_PER_CALL = {"cpu": 1}
ACCELERATOR_STEPS_PER_CALL = 16
MIN_DIVISOR = 4  # below this, calls of ACCELERATOR_STEPS_PER_CALL and shorter ones between

# Calls ahead, both ways: the feeder places the batches of up to this many calls before the step
# asks for them, and the loop, after launching call n, waits for call n - CALLS_AHEAD
# (`train.actions.InFlight`), so the devices always have queued work while the host's memory of
# placed batches and the distance between the step a signal names and the step that runs stay
# bounded. Without a bound, a loop that reads no result between logged steps queues calls
# without limit, and two CPU processes over gloo hang in the step's collectives after a few
# hundred queued calls (`genart train` of the floor's MLP GAN, log_every=96: hung at step
# 96-192 in 3 of 3 runs unbounded, finished in 3 of 3 bounded; benchmarks/results/
# cpu-2core-calls-ahead).
CALLS_AHEAD = 2


def default_steps_per_call(backend: str, periods: Sequence[int] = ()) -> int:
    """Steps per call for `backend` ("cpu", "gpu", "tpu", ...) when the config says 0: on an
    accelerator the largest divisor of the positive `periods`' (log, sample, save) common
    divisor up to ACCELERATOR_STEPS_PER_CALL, so that every call has the same length (one
    compile), unless that is below MIN_DIVISOR."""
    if backend in DEFAULT_STEPS_PER_CALL:
        return DEFAULT_STEPS_PER_CALL[backend]
    g = math.gcd(*[p for p in periods if p > 0]) if any(p > 0 for p in periods) else 0
    fits = [d for d in range(ACCELERATOR_STEPS_PER_CALL, 0, -1) if g and g % d == 0]
    return fits[0] if fits and fits[0] >= MIN_DIVISOR else ACCELERATOR_STEPS_PER_CALL


def resolve_steps_per_call(requested: int, backend: str | None = None,
                           periods: Sequence[int] = ()) -> int:
    """`train.steps_per_call`, with 0 meaning this backend's default for these `periods`."""
    return requested or default_steps_per_call(backend or jax.default_backend(), periods)


def call_sizes(start: int, end: int, k: int, every: Sequence[int]) -> Iterator[int]:
    """Steps per call from step `start` (done) to `end`: k at a time, never across a multiple
    of a positive entry of `every` (a call ends there), the rest before one as one call."""
    periods = [e for e in every if e > 0]
    step = start
    while step < end:
        boundary = min([end] + [(step // e + 1) * e for e in periods])
        n = min(k, boundary - step)
        yield n
        step += n


def stack(batches: Sequence[Any]) -> Any:
    """Host batches of one call stacked on a new leading axis (any dtype); one batch as is."""
    if len(batches) == 1:
        return batches[0]
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call's input: `batch` as `put` placed it, the data `position` after its last step,
    its number of `steps`, and its `first` host batch (for the loop's reconstruction grids)."""

    batch: Any
    position: Any
    steps: int
    first: Any


def device_calls(host: Iterator[tuple[Any, Any]], sizes: Iterable[int],
                 put: Callable[[int, Any], Any],
                 check: Callable[[Any], None] | None = None) -> Iterator[Call]:
    """The calls of `sizes`, from `host`'s (batch, position) pairs: each call's batches checked
    (`check`), stacked, and placed by `put(steps, stacked)`."""
    for n in sizes:
        items = [next(host) for _ in range(n)]
        batches = [b for b, _ in items]
        if check is not None:
            for b in batches:
                check(b)
        yield Call(put(n, stack(batches)), items[-1][1], n, batches[0])


def feed(host: Iterator[tuple[Any, Any]], sizes: Iterable[int], put: Callable[[int, Any], Any],
         check: Callable[[Any], None] | None = None, ahead: int = CALLS_AHEAD
         ) -> Iterator[Call]:
    """`device_calls` run on a background thread, `ahead` calls before the step asks (0: in
    the caller's thread). The transfers overlap the previous calls' compute."""
    return prefetch(device_calls(host, sizes, put, check), ahead)


class DriverPerSize:
    """The driver of each number of steps per call, built once on first use (thread-safe: the
    feeder's thread and the loop ask for them)."""

    def __init__(self, build: Callable[[int], Any], first: Any, k: int):
        self._build, self._drivers, self._lock = build, {k: first}, threading.Lock()

    def __call__(self, steps: int) -> Any:
        with self._lock:
            if steps not in self._drivers:
                self._drivers[steps] = self._build(steps)
            return self._drivers[steps]
