"""What the per-device train steps of every family share: applying a model in training mode,
per-example and named random keys, and the non-finite guard.

Random draws in a step are keyed by what they are for (`named_key`) and, per example, by the
example's global index (`example_keys`), so they do not depend on the device count and adding
a draw changes no other.
"""

from __future__ import annotations

import zlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

PyTree = Any
Metrics = dict[str, jax.Array]
State = Any  # a state dataclass with step, nonfinite_count and first_nonfinite_step


def apply_train(model: nn.Module, params: PyTree, batch_stats: PyTree, x: jax.Array,
                labels: jax.Array | None = None) -> tuple[jax.Array, PyTree]:
    """Apply in training mode (with class labels for a conditional model); returns (output,
    updated batch statistics) ({} without BN)."""
    if not batch_stats:
        return model.apply({"params": params}, x, labels, train=True), batch_stats
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, labels,
                               train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]


def example_keys(key: jax.Array, local_batch: int, axis_name: str) -> jax.Array:
    """One key per example of this device, `fold_in(key, global example index)`: random draws
    that do not depend on how the global batch is split over devices."""
    start = lax.axis_index(axis_name) * local_batch
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(local_batch))


def named_key(key: jax.Array, name: str, index: int = 0) -> jax.Array:
    """The key of draw `name` (its CRC-32) number `index` under `key`: draws keyed by what they
    are for, not by offsets that could collide."""
    return jax.random.fold_in(jax.random.fold_in(key, zlib.crc32(name.encode())), index)


def guard_nonfinite(old: State, new: State, metrics: Metrics) -> tuple[State, Metrics]:
    """Keep `new` if every metric is finite, else drop the update (keep `old`'s weights and
    optimizer states) and count it. The step counter always advances."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    step = old.step + 1
    count = old.nonfinite_count + jnp.where(finite, 0, 1).astype(jnp.int32)
    first = jnp.where((old.first_nonfinite_step == 0) & ~finite, step,
                      old.first_nonfinite_step).astype(jnp.int32)
    state = kept.replace(step=step, nonfinite_count=count, first_nonfinite_step=first)
    return state, dict(metrics, nonfinite_count=count.astype(jnp.float32))
