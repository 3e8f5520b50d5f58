"""Timing several things fairly on one machine: each is warmed up, then timed in rounds that
interleave them (the order rotating each round), with a short pause before each turn, so that
a slow spell of a shared or throttled machine lands on all of them instead of on whichever ran
then, and one framework's idle-spinning threads do not tax the next."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

try:
    import resource
except ImportError:  # not on Windows: no page-fault and kernel-time columns there
    resource = None


@dataclass
class Timed:
    """One thing to time: `call()` runs `steps_per_call` train steps and returns once they are
    done (blocking on the device). `step_s` collects seconds per step, one entry per call;
    `round_medians` the median of each round; `faults` and `kernel_s` the process's minor page
    faults and kernel CPU seconds per step over each call (where `resource` exists)."""

    name: str
    call: Callable[[], Any]
    steps_per_call: int = 1
    step_s: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    kernel_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Median and p90 seconds per step over every timed call, and the rounds' medians."""
        times = sorted(self.step_s)
        return {"steps_timed": len(times) * self.steps_per_call,
                "step_s_median": statistics.median(times),
                "step_s_p90": times[int(0.9 * (len(times) - 1))],
                "round_step_s_medians": list(self.round_medians),
                "minor_faults_per_step": _median_or_none(self.faults),
                "kernel_s_per_step": _median_or_none(self.kernel_s)}


def _median_or_none(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _usage() -> tuple[int, float] | None:
    if resource is None:
        return None
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_minflt, u.ru_stime


def time_interleaved(items: list[Timed], steps: int, rounds: int, pause_s: float = 0.2,
                     progress: Callable[[str], None] | None = None) -> None:
    """At least `steps` timed steps of each item, split over `rounds` rounds; each round runs
    every item in turn (rotating the order) for its share of calls."""
    if steps < 1 or rounds < 1:
        raise ValueError(f"need steps >= 1 and rounds >= 1, got steps={steps}, rounds={rounds}")
    for r in range(rounds):
        shift = r % max(1, len(items))
        for item in items[shift:] + items[:shift]:
            calls = max(1, math.ceil(steps / rounds / item.steps_per_call))
            time.sleep(pause_s)
            times = []
            for _ in range(calls):
                u0 = _usage()
                t0 = time.perf_counter()
                item.call()
                times.append((time.perf_counter() - t0) / item.steps_per_call)
                u1 = _usage()
                if u0 and u1:
                    item.faults.append((u1[0] - u0[0]) / item.steps_per_call)
                    item.kernel_s.append((u1[1] - u0[1]) / item.steps_per_call)
            item.step_s.extend(times)
            item.round_medians.append(statistics.median(times))
        if progress:
            progress(f"round {r + 1}/{rounds} done")
