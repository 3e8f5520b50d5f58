"""The small training loop of the classifier, the SimCLR encoder and the feedback distillation:
convergence on a known problem, equality with the hand-written loop it replaced, its batches,
its progress reports and where it stops."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genart_jax.small_train import fit, gradient_update, shuffled_batches

W_TRUE, B_TRUE = np.array([1.5, -2.0, 0.5], np.float32), np.float32(0.25)


def regression(n=256, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)
    return x, x @ W_TRUE + B_TRUE


def regression_step(tx):
    """A linear least-squares step in the shape `fit` runs: ((params, opt), (x, y))."""
    @jax.jit
    def step(state, batch):
        x, y = batch

        def loss_fn(p):
            return jnp.mean(jnp.square(x @ p["w"] + p["b"] - y))

        params, opt_state, loss = gradient_update(loss_fn, tx, *state)
        return (params, opt_state), loss
    return step


def init(tx):
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    return params, tx.init(params)


def batches_of(x, y, rng, batch_size=32):
    return ((x[i], y[i]) for i in shuffled_batches(rng, len(x), batch_size))


def test_fit_converges_on_a_linear_regression():
    x, y = regression()
    tx = optax.adam(0.05)
    (params, _), losses = fit(regression_step(tx), init(tx),
                              batches_of(x, y, np.random.default_rng(0)), 400)
    assert losses.shape == (400,) and losses.dtype == np.float32
    assert losses[-1] < 1e-5 < losses[0]
    np.testing.assert_allclose(params["w"], W_TRUE, atol=1e-3)
    np.testing.assert_allclose(params["b"], B_TRUE, atol=1e-3)


def test_fit_is_the_hand_written_loop_to_the_bit():
    """What the three callers did before `fit`: the same states and losses, bit for bit."""
    x, y = regression()
    tx = optax.adamw(optax.cosine_decay_schedule(1e-2, 30), weight_decay=1e-4)
    step = regression_step(tx)
    (params, opt_state), losses = fit(step, init(tx),
                                      batches_of(x, y, np.random.default_rng(3)), 30)

    rng = np.random.default_rng(3)
    state, order, pos, want = init(tx), rng.permutation(len(x)), 0, []
    for _ in range(30):
        if pos + 32 > len(order):
            order, pos = rng.permutation(len(x)), 0
        idx = order[pos:pos + 32]
        pos += 32
        state, loss = step(state, (x[idx], y[idx]))
        want.append(float(loss))
    np.testing.assert_array_equal(losses, np.asarray(want, np.float32))
    for a, b in zip(jax.tree.leaves((params, opt_state)), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_traces_the_step_once():
    x, y = regression()
    tx, traces = optax.sgd(0.1), []
    inner = regression_step(tx)

    @jax.jit
    def step(state, batch):
        traces.append(1)
        return inner(state, batch)

    fit(step, init(tx), batches_of(x, y, np.random.default_rng(0)), 10)
    assert len(traces) == 1


def test_gradient_update_with_aux_returns_the_loss_and_the_aux():
    tx = optax.sgd(0.5)
    params = jnp.array([2.0])
    params, _, (loss, aux) = jax.jit(lambda p, o: gradient_update(
        lambda q: (jnp.sum(q ** 2), {"seen": q}), tx, p, o, has_aux=True))(params, tx.init(params))
    np.testing.assert_allclose(params, [0.0])  # 2 - 0.5 * 2 * 2
    assert float(loss) == 4.0 and float(aux["seen"][0]) == 2.0


def test_shuffled_batches_are_a_permutation_per_epoch_remainder_dropped():
    batches = shuffled_batches(np.random.default_rng(0), 10, 3)
    epochs = [np.concatenate(list(itertools.islice(batches, 3))) for _ in range(3)]
    for epoch in epochs:
        assert len(epoch) == 9 and len(set(epoch.tolist())) == 9  # 10 // 3 batches, no repeat
    assert not np.array_equal(epochs[0], epochs[1])
    again = shuffled_batches(np.random.default_rng(0), 10, 3)
    np.testing.assert_array_equal(np.concatenate(list(itertools.islice(again, 9))),
                                  np.concatenate(epochs))


def test_shuffled_batches_smaller_than_a_batch_give_all_examples_each_time():
    for batch in itertools.islice(shuffled_batches(np.random.default_rng(0), 4, 8), 3):
        assert sorted(batch.tolist()) == [0, 1, 2, 3]


def test_fit_reports_progress_to_a_callback_or_a_bar(capsys):
    x, y = regression()
    tx = optax.sgd(0.1)
    seen = []
    fit(regression_step(tx), init(tx), batches_of(x, y, np.random.default_rng(0)), 3,
        progress=lambda done, steps: seen.append((done, steps)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert capsys.readouterr().err == ""  # a callback, no bar

    fit(regression_step(tx), init(tx), batches_of(x, y, np.random.default_rng(0)), 3,
        progress=True, desc="toy")
    err = capsys.readouterr().err
    assert "toy" in err and "3/3" in err and "loss=" in err


def test_fit_stops_at_steps_and_refuses_batches_that_run_out():
    x, y = regression()
    tx = optax.sgd(0.1)
    pulled = []

    def batches():
        for batch in batches_of(x, y, np.random.default_rng(0)):
            pulled.append(batch)
            yield batch

    fit(regression_step(tx), init(tx), batches(), 2)
    assert len(pulled) == 2  # no batch drawn past the last step
    state = init(tx)
    same, losses = fit(regression_step(tx), state, batches(), 0)
    assert same is state and losses.shape == (0,)
    with pytest.raises(ValueError, match="ran out after 2 of 5"):
        fit(regression_step(tx), init(tx), [(x[:4], y[:4])] * 2, 5)
    with pytest.raises(ValueError, match=">= 0"):
        fit(regression_step(tx), init(tx), batches(), -1)
