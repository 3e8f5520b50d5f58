"""The training loop of the package's small auxiliary networks: the metrics' classifier
(`classifier.train_classifier`), the SimCLR encoder (`selfsup.train_features`) and the
feedback distillation (`feedback.distill`).

The shape is optax's and equinox's small examples: a jitted pure `step(state, batch) ->
(state, loss)` run over an iterable of batches for a fixed number of steps (`fit`), its body
one optax update (`gradient_update`), its batches drawn by a seeded shuffle per epoch
(`shuffled_batches`). The GAN and VAE loop (`genart_jax.train`) is another matter: sharded,
checkpointed and resumable; these networks train in minutes and are saved once at the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

PyTree = Any
Step = Callable[[PyTree, Any], tuple[PyTree, jax.Array]]
POSTFIX_EVERY = 50  # steps between the progress bar's loss readings (each one waits for it)


def gradient_update(loss_fn: Callable[[PyTree], Any], tx: optax.GradientTransformation,
                    params: PyTree, opt_state: optax.OptState, *, has_aux: bool = False
                    ) -> tuple[PyTree, optax.OptState, Any]:
    """One step of `tx` down `loss_fn(params)`: (params, opt_state, value), value being the
    loss, or (loss, aux) with `has_aux` (`jax.value_and_grad`'s convention). Call it inside a
    jitted step."""
    value, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


def shuffled_batches(rng: np.random.Generator, n: int, batch_size: int
                     ) -> Iterator[np.ndarray]:
    """Endless batches of indices into n examples: a fresh `rng` permutation each epoch, its
    remainder (fewer than batch_size) dropped; while n < batch_size, each batch is all n.
    Lazy, so draws the caller makes from `rng` between batches interleave reproducibly."""
    order, pos = rng.permutation(n), 0
    while True:
        if pos + batch_size > len(order):
            order, pos = rng.permutation(n), 0
        yield order[pos:pos + batch_size]
        pos += batch_size


def fit(step: Step, state: PyTree, batches: Iterable[Any], steps: int, *,
        progress: bool | Callable[[int, int], None] | None = None, desc: str | None = None
        ) -> tuple[PyTree, np.ndarray]:
    """`state, loss = step(state, batch)` over the first `steps` of `batches`.

    `progress`: True shows a tqdm bar labelled `desc`, with the loss every POSTFIX_EVERY steps;
    a callable is called as progress(done, steps) after each step, once its loss is computed;
    None or False shows nothing. Returns (state, losses (steps,) as NumPy)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    callback = progress if callable(progress) else None
    bar = tqdm(total=steps, disable=progress is not True, unit="step", dynamic_ncols=True,
               desc=desc)
    losses = []
    for done, batch in enumerate(itertools.islice(batches, steps), 1):
        state, loss = step(state, batch)
        losses.append(loss)
        bar.update(1)
        if progress is True and (done % POSTFIX_EVERY == 0 or done == steps):
            bar.set_postfix(loss=f"{float(loss):.4f}")
        if callback is not None:
            jax.block_until_ready(loss)  # done means computed, not only dispatched
            callback(done, steps)
    bar.close()
    if len(losses) < steps:
        raise ValueError(f"the batches ran out after {len(losses)} of {steps} steps")
    return state, np.asarray(jax.device_get(losses))
