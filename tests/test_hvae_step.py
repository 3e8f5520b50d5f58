"""The hierarchical VAE's training step (`genart_jax.train.hvae_step`): 8 simulated devices
against 1 under both drivers, gradient clipping and skipping, the EMA against a hand
computation, the non-finite guard, the warm-up schedule, and the loss falling on a tiny data
set. One tiny network (8 px, 2 groups at 1 and 8 px) keeps every compile to seconds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from genart_jax import dmol
from genart_jax.models import hvae
from genart_jax.parallel import DATA, make_driver, make_mesh
from genart_jax.train import hvae_step as hs

MODEL = hvae.HVAE(image_size=8, channels=3, resolutions=(8, 1), widths=(8, 8),
                  enc_blocks=(1, 0), dec_blocks=(1, 1), zdim=2, num_mixtures=2)
BATCH = 16
STEPS = 3
KEY = jax.random.PRNGKey(0)


def batches(n, seed=1):
    """n batches of uint8 images in the drivers' layout (1, BATCH, 8, 8, 3): smooth colour
    gradients with noise, something a tiny network can learn quickly."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 8)
    base = (ramp[None, :, None, None] * rng.uniform(60, 200, (BATCH, 1, 1, 3))
            + ramp[None, None, :, None] * rng.uniform(0, 50, (BATCH, 1, 1, 3)))
    return [{"image": np.clip(base + rng.normal(0, 4, base.shape), 0, 255)
             .astype(np.uint8)[None]} for _ in range(n)]


TX = hs.make_hvae_optimizer(learning_rate=3e-3, warmup_steps=2)
CONFIG = hs.HVAEStepConfig(ema_rate=0.9)  # VDVAE's clip (200) and skip threshold (400)


def make(driver_name, num_devices, tx=TX, config=CONFIG):
    return make_driver(driver_name, hs.make_hvae_step(MODEL, tx, config),
                       jax.devices()[:num_devices], donate=False)


def run(driver, state, data):
    """(host state, metrics per step) after one step per batch of `data` from host `state`."""
    state, history = driver.put_state(state), []
    for batch in data:
        state, metrics = driver.step(state, driver.put_batch(batch))
        history.append(driver.get_metrics(metrics))
    return driver.get_state(state), history


def assert_trees_close(a, b, atol, rtol=0.0):
    flat_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    flat_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for (path, x), y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol,
                                   err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def init():
    """The initial state (host), compiled once."""
    return jax.device_get(jax.jit(lambda k: hs.init_hvae_state(k, MODEL, TX))(KEY))


@pytest.fixture(scope="module")
def one_device():
    """The 1-device driver (compiled once, shared) and its run of STEPS batches."""
    return make("shard_map", 1)


@pytest.fixture(scope="module")
def reference(init, one_device):
    data = batches(STEPS)
    state, history = run(one_device, init, data)
    return data, state, history


def test_metrics_and_state_after_steps(reference):
    _, state, history = reference
    assert int(state.step) == STEPS
    assert int(state.skipped_updates) == 0 and int(state.nonfinite_count) == 0
    m = history[-1]
    assert set(m) == {"loss", "bits_per_dim", "distortion", "rate", "kl_g0", "kl_g1",
                      "grad_norm", "skipped_updates", "nonfinite_count"}
    np.testing.assert_allclose(m["loss"], m["distortion"] + m["rate"], rtol=1e-6)
    np.testing.assert_allclose(m["bits_per_dim"], m["loss"] / math.log(2), rtol=1e-5)
    kl_sum = sum(m[f"kl_g{i}"] for i in range(MODEL.num_groups))
    np.testing.assert_allclose(kl_sum / (8 * 8 * 3), m["rate"], rtol=1e-4)
    assert 2 < m["bits_per_dim"] < 12  # a fresh network on 8-bit data
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))


@pytest.mark.parametrize("driver_name", ["shard_map", "pmap"])
def test_eight_devices_match_one_device(init, reference, driver_name):
    data, ref_state, ref_history = reference
    driver = make(driver_name, 8)
    state, history = run(driver, init, data)
    assert driver.num_devices == 8
    assert int(state.step) == STEPS
    for field in ("params", "ema_params", "opt_state"):
        assert_trees_close(getattr(state, field), getattr(ref_state, field), atol=2e-6)
    for got, want in zip(history, ref_history, strict=True):
        assert set(got) == set(want)
        for k in want:  # grad_norm catches a scale error that Adam's normalisation hides
            np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-7, err_msg=k)


def test_clip_and_skip_thresholds():
    grads = {"a": jnp.array([3.0, 0.0]), "b": {"c": jnp.array([[4.0]])}}  # norm exactly 5
    same, norm, skip = hs.clip_and_skip(grads, grad_clip=0.0, skip_threshold=0.0)
    assert float(norm) == 5.0 and not bool(skip)
    assert_trees_close(same, grads, atol=0)
    # Skipped exactly when the norm reaches the threshold (the reference applies norm < it).
    assert bool(hs.clip_and_skip(grads, 0.0, 5.0)[2])
    assert bool(hs.clip_and_skip(grads, 0.0, 4.999)[2])
    assert not bool(hs.clip_and_skip(grads, 0.0, 5.001)[2])
    assert not bool(hs.clip_and_skip(grads, 0.0, -1.0)[2])
    clipped, norm, _ = hs.clip_and_skip(grads, grad_clip=2.0, skip_threshold=400.0)
    assert float(norm) == 5.0  # the norm before clipping, as clip_grad_norm_ returns it
    np.testing.assert_allclose(float(optax.tree.norm(clipped)), 2.0, rtol=1e-6)
    np.testing.assert_allclose(clipped["a"], [3.0 * 2 / (5 + 1e-6), 0.0], rtol=1e-7)
    assert_trees_close(hs.clip_and_skip(grads, 6.0, 0.0)[0], grads, atol=0)  # under the clip


def test_clipped_update_and_ema_in_the_step(init):
    """Plain SGD with lr 1 and a tiny clip: the update is the clipped gradient, of norm
    grad_clip; the EMA at rate 0.75 is 0.75 * init + 0.25 * the new params."""
    tx, clip = optax.sgd(1.0), 1e-3
    config = hs.HVAEStepConfig(grad_clip=clip, skip_threshold=0.0, ema_rate=0.75)
    start = init.replace(opt_state=tx.init(init.params))
    state, history = run(make("shard_map", 2, tx, config), start, batches(1))
    assert history[0]["grad_norm"] > 100 * clip  # the clip was active
    delta = jax.tree.map(lambda a, b: a - b, state.params, init.params)
    np.testing.assert_allclose(float(optax.tree.norm(delta)), clip, rtol=1e-3)
    want = jax.tree.map(lambda e, p: 0.75 * e + 0.25 * p, init.ema_params, state.params)
    assert_trees_close(state.ema_params, want, atol=1e-7)
    got = hs.ema_update({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, -2.0])}, 0.9)
    np.testing.assert_allclose(got["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2 - 0.1 * 2], rtol=1e-6)


def confidently_wrong(state):
    """`state` with the output conv replaced by a constant: every pixel's mixture centred at
    the top value with log scale -6.5, so black images cost about 2 / exp(-6.5) nats per
    dimension and the gradient norm is in the hundreds (an exploding update)."""
    m, c = MODEL.num_mixtures, MODEL.channels
    bias = np.zeros(dmol.num_params(c, m), np.float32)
    bias[m:m + c * m] = 1.0  # means
    bias[m + c * m:m + 2 * c * m] = -6.5  # log scales
    params = jax.tree.map(np.asarray, state.params)
    params["out_conv"] = {"kernel": np.zeros_like(params["out_conv"]["kernel"]), "bias": bias}
    return state.replace(params=params, ema_params=params)


def test_gradient_skip_leaves_the_state_but_counts(init, one_device):
    """VDVAE's thresholds (clip 200, skip 400): an iteration whose gradient norm is above 400
    changes nothing but the counters; the next, ordinary one is applied."""
    start = confidently_wrong(init)
    black = {"image": np.zeros((1, BATCH, 8, 8, 3), np.uint8)}
    state, history = run(one_device, start, [black])
    assert history[0]["grad_norm"] > 400 and np.isfinite(history[0]["loss"])
    for field in ("params", "ema_params", "opt_state", "key"):
        assert_trees_close(getattr(state, field), getattr(start, field), atol=0)
    assert int(state.step) == 1 and int(state.skipped_updates) == 1
    assert history[0]["skipped_updates"] == 1.0 and int(state.nonfinite_count) == 0
    after, history = run(one_device, init, batches(1))  # an ordinary iteration
    assert history[0]["grad_norm"] < 200 and int(after.skipped_updates) == 0


def test_nonfinite_iteration_is_dropped_and_counted(reference, one_device):
    data, state, _ = reference
    bad = state.replace(params=jax.tree.map(
        lambda p: np.where(np.arange(p.size).reshape(p.shape) == 0, np.nan, p), state.params))
    after, history = run(one_device, bad, data[:1])
    assert not np.isfinite(history[0]["loss"])
    for field in ("params", "ema_params", "opt_state"):  # NaN == NaN here
        assert_trees_close(getattr(after, field), getattr(bad, field), atol=0)
    assert int(after.step) == STEPS + 1
    assert int(after.nonfinite_count) == 1 and int(after.first_nonfinite_step) == STEPS + 1
    assert int(after.skipped_updates) == 0  # a NaN norm is not a skip: the guard drops it


def test_loss_falls_on_a_tiny_dataset(init, one_device):
    data = batches(2, seed=3)
    state, history = run(one_device, init, [data[i % 2] for i in range(30)])
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, losses
    assert int(state.skipped_updates) == 0 and int(state.nonfinite_count) == 0


def test_warmup_schedule_and_optimizers():
    lr = hs.warmup_schedule(2e-4, 100)
    np.testing.assert_allclose([float(lr(i)) for i in (0, 1, 50, 100, 101, 10_000)],
                               [0.0, 2e-6, 1e-4, 2e-4, 2e-4, 2e-4], rtol=1e-6)
    assert float(hs.warmup_schedule(1e-3, 0)(0)) == pytest.approx(1e-3)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 0.5])}
    for name in ("adamw", "adamax"):
        tx = hs.make_hvae_optimizer(name, learning_rate=1e-2, warmup_steps=0, weight_decay=0.0)
        updates, _ = tx.update(grads, tx.init(params), params)
        # Adam and Adamax move every coordinate by about lr on their first step.
        np.testing.assert_allclose(updates["w"], [-1e-2, -1e-2], rtol=1e-4)
    # decoupled weight decay as PyTorch's AdamW: -lr * wd * w on top of the Adam step
    tx = hs.make_hvae_optimizer("adamw", learning_rate=1e-2, warmup_steps=0, weight_decay=0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-1e-2 - 1e-2 * 0.5 * 1.0, -1e-2 + 1e-2],
                               rtol=1e-4, atol=1e-8)
    with pytest.raises(ValueError, match="unknown hvae optimizer"):
        hs.make_hvae_optimizer("sgd")


def test_bfloat16_model_keeps_float32_state_and_metrics(init):
    """Traced only (no compile): a bfloat16-compute network steps float32 parameters, EMA and
    optimizer state and reports float32 metrics."""
    model = MODEL.clone(dtype=jnp.bfloat16)
    mesh = make_mesh(jax.devices()[:2])
    step = jax.shard_map(hs.make_hvae_step(model, TX, CONFIG), mesh=mesh,
                         in_specs=(P(), P(None, DATA)), out_specs=(P(), P()), check_vma=False)
    state, metrics = jax.eval_shape(step, init, batches(1)[0])
    for leaf in jax.tree.leaves((state.params, state.ema_params, state.opt_state)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())


def test_ema_warmup_ramps_the_rate_from_the_first_update(init):
    """With ema_warmup=10, iteration 0 uses rate min(0.9, 1/10) = 0.1, iteration 90 uses
    min(0.9, 91/100) = 0.9."""
    config = hs.HVAEStepConfig(skip_threshold=0.0, ema_rate=0.9, ema_warmup=10)
    assert float(hs.ema_rate(config, jnp.int32(0))) == pytest.approx(0.1)
    assert float(hs.ema_rate(config, jnp.int32(90))) == pytest.approx(0.9)
    assert hs.ema_rate(hs.HVAEStepConfig(ema_rate=0.9), jnp.int32(0)) == 0.9  # off: VDVAE's
    state, _ = run(make("shard_map", 1, TX, config), init, batches(1))
    want = jax.tree.map(lambda e, p: 0.1 * e + 0.9 * p, init.ema_params, state.params)
    assert_trees_close(state.ema_params, want, atol=1e-7)
