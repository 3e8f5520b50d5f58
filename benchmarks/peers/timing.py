"""Timing of a PyTorch peer's train step, the same way for every peer: warm-up calls, then
`steps` timed calls; median and p90 seconds per step and images/s."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def time_step(step: Callable[[], Any], *, batch: int, steps: int, warmup: int,
              compile_model: bool) -> dict[str, Any]:
    """Seconds per call of `step` (median, p90) and images/s at `batch`, as a peer row."""
    import torch

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = statistics.median(times)
    return {"peer": "pytorch " + ("torch.compile" if compile_model else "eager"),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": batch,
            "step_s_median": med, "step_s_p90": times[int(0.9 * (len(times) - 1))],
            "images_per_sec": batch / med, "warmup_s": warm_s}
