"""R3GAN: the model, the relativistic pairing loss and R1/R2 against independent references,
adaptive augmentation and its controller, device equivalence, bfloat16. Resume with p (after
kill -9) and the downstream commands: tests/test_r3gan_cli.py."""

import unittest.mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genart_jax import augment, losses
from genart_jax.config import ConfigError, apply_overrides, load_config
from genart_jax.models import build_gan, dcgan, resample_conv
from genart_jax.models.dcgan import DCGANDiscriminator
from genart_jax.models.r3gan import R3GANDiscriminator, downsample2x, grouped_conv, upsample2x
from genart_jax.train import abstract_state
from tests.conftest import tiny_config
from tests.test_parallel import assert_gan_runs_match, make_batches, run_steps

TINY = {"model.r3gan.widths": "(16, 8)", "model.r3gan.blocks": "(1, 1)",
        "model.r3gan.group_size": "8", "model.latent_dim": "8", "data.image_size": "8",
        "train.batch_size": "16", "augment.ada_kimg": "0.1", "augment.ada_p": "0.3"}


def tiny_r3gan(**overrides: str):
    return load_config("r3gan_digits", {**TINY, **overrides})


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def tiny_d():
    """A two-stage R3GAN discriminator on 8x8 images in float64, with non-zero last layers so
    that every path of D matters in the derivatives below."""
    d = R3GANDiscriminator(widths=(8, 8), blocks=(1, 1), group_size=8, dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1), jnp.float64)

    @jax.jit  # one program, not some hundred float64 ops dispatched one by one
    def init(x_):
        params = d.init(jax.random.PRNGKey(1), x_)["params"]
        return jax.tree.map(
            lambda p: (p + 0.05 * jax.random.normal(jax.random.PRNGKey(2), p.shape)).astype(
                jnp.float64), params)
    return d, init(x), x


# --- losses ----------------------------------------------------------------------------------

def test_relativistic_losses_match_numpy():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=7) * 3, rng.normal(size=7) * 3
    want_d = np.mean(np.log1p(np.exp(-(real - fake))))
    want_g = np.mean(np.log1p(np.exp(-(fake - real))))
    got_d = jax.jit(losses.relativistic_d_loss)(real.astype(np.float32), fake.astype(np.float32))
    got_g = jax.jit(losses.relativistic_g_loss)(real.astype(np.float32), fake.astype(np.float32))
    np.testing.assert_allclose(float(got_d), want_d, rtol=1e-5)
    np.testing.assert_allclose(float(got_g), want_g, rtol=1e-5)
    with pytest.raises(ValueError, match="as many real as fake"):
        losses.relativistic_d_loss(jnp.zeros(3), jnp.zeros(4))


def test_penalty_matches_per_example_gradients_and_finite_differences(x64):
    d, params, x = tiny_d()

    def f(inp):
        return d.apply({"params": params}, inp)

    logits, sq = jax.jit(lambda inp: losses.squared_input_gradient(f, inp))(x)
    # Direct: each example's own gradient, one example at a time.
    per = np.asarray(jax.jit(jax.vmap(jax.grad(lambda xi: f(xi[None])[0])))(x))
    np.testing.assert_allclose(sq, np.sum(per ** 2, axis=(1, 2, 3)), rtol=1e-10)
    # Finite differences: the derivative along the unit gradient is the gradient's norm.
    eps = 1e-5
    u = per / np.linalg.norm(per.reshape(3, -1), axis=1)[:, None, None, None]
    f_jit = jax.jit(f)
    fd = (np.asarray(f_jit(x + eps * u)) - np.asarray(f_jit(x - eps * u))) / (2 * eps)
    np.testing.assert_allclose(fd ** 2, sq, rtol=3e-3)  # measured: 1e-3
    penalty = jax.jit(lambda inp: losses.zero_centered_penalty(f, inp))(x)
    np.testing.assert_allclose(float(penalty), float(np.mean(sq)), rtol=1e-10)
    assert logits.shape == (3,)


def _param_fd_check(penalty_of_params, params, kinks=None):
    """grad of the penalty in D's params (second order) against a central difference along a
    random direction (eps small enough that no leaky-ReLU kink is crossed: the penalty, a
    squared input gradient, jumps where a leaky ReLU's input changes sign). `kinks`: params ->
    the leaky ReLUs' inputs, to check that none changes sign within eps (to first order)."""
    grads = jax.grad(penalty_of_params)(params)
    v = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(5), p.shape, p.dtype),
                     params)
    eps = 1e-5
    if kinks is not None:
        z, dz = jax.jvp(kinks, (params,), (v,))
        assert float(jnp.min(jnp.abs(z) / (eps * jnp.abs(dz)))) > 2, "a kink within eps"
    plus = penalty_of_params(jax.tree.map(lambda p, d_: p + eps * d_, params, v))
    minus = penalty_of_params(jax.tree.map(lambda p, d_: p - eps * d_, params, v))
    fd = (float(plus) - float(minus)) / (2 * eps)
    exact = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(grads),
                                                       jax.tree.leaves(v), strict=True))
    assert abs(exact) > 1e-6
    assert exact == pytest.approx(fd, rel=1e-2)


def test_penalty_is_differentiable_in_the_params_of_r3gan(x64):
    d, params, x = tiny_d()

    def penalty(p):
        return losses.zero_centered_penalty(lambda i: d.apply({"params": p}, i), x)

    _param_fd_check(jax.jit(penalty), params)


@pytest.mark.parametrize("conv_forms,min_flops", [("auto", 1e9), ("auto", 0), ("xla", 1e9)])
def test_penalty_works_through_the_custom_vjp_convolutions_of_dcgan(x64, conv_forms, min_flops,
                                                                    monkeypatch):
    """DCGAN's D uses resample_conv's custom-VJP layers: R1 through them is second order, in
    XLA's forms (these sizes, and conv_forms "xla") and in the CPU stride-1 forms (min_flops
    0). This was a strict xfail, blamed on the custom VJPs, which were right: at its input
    (key 0) a leaky ReLU's input was 5e-8 from its kink, so the finite difference jumped across
    it, and D's logits were rounded to float32."""
    monkeypatch.setattr(resample_conv, "CPU_FORMS_MIN_FLOPS", min_flops)
    d = DCGANDiscriminator(width=4, dtype=jnp.float64, conv_forms=conv_forms)
    x = jax.random.normal(jax.random.PRNGKey(5), (3, 16, 16, 1), jnp.float64)
    variables = d.init(jax.random.PRNGKey(1), x, train=False)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), variables["params"])

    def apply(p, i):
        return d.apply({"params": p, "batch_stats": variables["batch_stats"]}, i, train=False)

    def penalty(p):
        return losses.zero_centered_penalty(lambda i: apply(p, i), x)

    def leaky_relu_inputs(p):  # the first layer's output, then each BatchNorm's
        # with XLA's convolution itself: the check differentiates forwards, which a custom VJP
        # cannot
        with unittest.mock.patch.object(dcgan, "downsample_conv",
                                        lambda x_, w_, _: resample_conv.down_xla(x_, w_)):
            _, inter = d.apply(
                {"params": p, "batch_stats": variables["batch_stats"]}, x, train=False,
                mutable=["intermediates"], capture_intermediates=lambda m, _: (
                    m.name == "Conv_0" or (m.name or "").startswith("BatchNorm")))
        return jnp.concatenate([a.ravel() for a in jax.tree.leaves(inter)])

    assert apply(params, x).dtype == jnp.float64
    assert leaky_relu_inputs(params).size == 3 * (8 * 8 * 4 + 4 * 4 * 8)
    _param_fd_check(jax.jit(penalty), params, kinks=leaky_relu_inputs)


def test_dcgan_trains_with_r1_and_r2():
    """train.r1_gamma/r2_gamma with DCGAN (BatchNorm in D, its statistics averaged over the
    devices): the CPU forms of the custom VJPs (every pass, min_flops 0) on one device against
    XLA's forms of every pass (model.conv_forms=xla) on two."""
    cfg = tiny_config("dcgan", **{"train.r1_gamma": "1.0", "train.r2_gamma": "0.5"})
    assert cfg.train.r1_gamma == 1.0
    batches = make_batches(cfg)
    before = resample_conv.CPU_FORMS_MIN_FLOPS
    try:
        resample_conv.CPU_FORMS_MIN_FLOPS = 0
        d1, s1, h1 = run_steps(cfg, "shard_map", 1, batches)
    finally:
        resample_conv.CPU_FORMS_MIN_FLOPS = before
    xla = apply_overrides(cfg, {"model.conv_forms": "xla"})
    d2, s2, h2 = run_steps(xla, "shard_map", 2, batches)
    assert all(h["r1"] > 0 and h["r2"] > 0 and np.isfinite(h["d_loss"]) for h in h1)
    assert_gan_runs_match(d2.get_state(s2), d1.get_state(s1), h2, h1)


# --- model pieces ------------------------------------------------------------------------------

def test_resamplers_are_bilinear_and_adjoint():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    y = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    # Adjoint pair: <up(x), y> = 4 <x, down(y)> (down is up's transpose over 2 per axis).
    lhs = float(jnp.vdot(upsample2x(x), y))
    rhs = 4 * float(jnp.vdot(x, downsample2x(y)))
    assert lhs == pytest.approx(rhs, rel=1e-5)
    # Interior values of the bilinear upsampling, in float64 NumPy along one axis.
    up = np.asarray(upsample2x(x))
    row = x[0, 1, :, 0].astype(np.float64)
    col = 0.75 * x[0, 1, :, 0] + 0.25 * x[0, 0, :, 0]  # output row 2: (x[0] + 3 x[1]) / 4
    want = np.empty(8)
    want[0::2] = 0.75 * col + 0.25 * np.concatenate([[0], col[:-1]])
    want[1::2] = 0.75 * col + 0.25 * np.concatenate([col[1:], [0]])
    np.testing.assert_allclose(up[0, 2, :, 0], want, rtol=1e-5, atol=1e-6)
    assert row.shape == (4,)
    # A constant image stays constant inside.
    np.testing.assert_allclose(downsample2x(np.ones((1, 8, 8, 1), np.float32))[0, 1:3, 1:3],
                               1.0)


@pytest.mark.parametrize("kernel,groups,padding", [(3, 4, "SAME"), (4, 16, "VALID")])
def test_cpu_grouped_conv_equals_xla_grouped_conv(kernel, groups, padding):
    """The block-diagonal dense form (CPU) against XLA's grouped convolution: values, first
    derivatives and R1's second derivative in the kernel; the CPU program has no grouped
    convolution left."""
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 16))
    k = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 16 // groups, 16)) * 0.3

    def xla(x_, k_):
        return jax.lax.conv_general_dilated(x_, k_, (1, 1), padding, dimension_numbers=dn,
                                            feature_group_count=groups)

    def ours(x_, k_):
        return grouped_conv(x_, k_, (1, 1), padding, dimension_numbers=dn,
                            feature_group_count=groups)

    def r1(conv_fn):
        def penalty(k_, x_):
            g = jax.grad(lambda xi: jnp.sum(jnp.tanh(conv_fn(xi, k_))))(x_)
            return jnp.sum(g ** 2)
        return jax.jit(jax.value_and_grad(penalty, argnums=(0, 1)))

    for got, want in zip(jax.tree.leaves(r1(ours)(k, x)), jax.tree.leaves(r1(xla)(k, x)),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours(x, k), xla(x, k), rtol=1e-5, atol=1e-5)
    assert f"feature_group_count = {groups}" in jax.jit(xla).lower(x, k).as_text()
    assert f"feature_group_count = {groups}" not in jax.jit(ours).lower(x, k).as_text()


def test_blocks_start_as_identity_and_conditional_models_take_labels():
    cfg = tiny_r3gan(**{"model.num_classes": "10"})
    g, d = build_gan(cfg.model, cfg.data)
    z, y = jnp.ones((2, 8)), jnp.array([1, 2], jnp.int32)
    gv = g.init(jax.random.PRNGKey(0), z, y)
    img = g.apply(gv, z, y)
    assert img.shape == (2, 8, 8, 1)
    assert d.apply(d.init(jax.random.PRNGKey(1), img, y), img, y).shape == (2,)
    names = [(jax.tree_util.keystr(path), p)
             for path, p in jax.tree_util.tree_leaves_with_path(gv["params"])]
    zero_last = [p for name, p in names if "block" in name and "Conv_2" in name]
    assert zero_last and all(float(jnp.max(jnp.abs(p))) == 0.0 for p in zero_last)


def test_bad_schema_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="2 stages .* need 2 entries each"):
        tiny_r3gan(**{"model.r3gan.widths": "(16, 16, 8)"})
    with pytest.raises(ConfigError, match="multiple of model.r3gan.group_size"):
        tiny_r3gan(**{"model.r3gan.group_size": "7"})
    with pytest.raises(ConfigError, match="augment.ada"):
        tiny_r3gan(**{"augment.ada": "sometimes"})
    with pytest.raises(ConfigError, match="model.conv_forms"):
        load_config("dcgan_digits", {"model.conv_forms": "cpu"})
    # R1/R2 with DCGAN were refused until its custom VJPs' second derivatives were tested.
    assert load_config("dcgan_digits", {"train.r1_gamma": "1.0"}).train.r1_gamma == 1.0


# --- augmentation ------------------------------------------------------------------------------

def test_ada_at_p0_is_identity_and_at_p1_geometric_ops_permute_pixels():
    x = jax.random.uniform(jax.random.PRNGKey(0), (8, 16, 16, 1), minval=-1, maxval=1)
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    np.testing.assert_array_equal(augment.ada_batch(keys, x, jnp.float32(0.0)), x)
    for op in (augment.flip, augment.rot90):
        out = jax.vmap(op)(keys, x)
        np.testing.assert_allclose(np.sort(np.asarray(out).ravel()), np.sort(np.asarray(x).ravel()))
    rot = np.asarray(jax.vmap(augment.rot90)(keys, x))
    for i in range(8):
        assert any(np.array_equal(rot[i], np.rot90(np.asarray(x[i]), k)) for k in range(4))
    moved = np.asarray(jax.vmap(augment.integer_translation)(keys, x))
    assert moved.shape == x.shape and not np.array_equal(moved, np.asarray(x))
    # Generated images get G's gradient through the augmentation.
    g = jax.grad(lambda im: jnp.sum(augment.ada_batch(keys, im, jnp.float32(0.5)) ** 2))(x)
    assert float(jnp.max(jnp.abs(g))) > 0


def test_integer_translation_is_numpys_reflect_padding_for_every_shift():
    x = np.random.default_rng(0).normal(size=(8, 6, 2)).astype(np.float32)
    shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
    dy, dx = (jnp.array(v) for v in zip(*shifts, strict=True))
    got = np.asarray(jax.jit(jax.vmap(augment.translate_by, (None, 0, 0)))(x, dy, dx))
    padded = np.pad(x, ((3, 3), (3, 3), (0, 0)), mode="reflect")
    for out, (a, b) in zip(got, shifts, strict=True):
        np.testing.assert_array_equal(out, padded[3 - a:3 - a + 8, 3 - b:3 - b + 6])


def test_ada_adjust_moves_by_images_over_kimg_and_stays_in_range():
    kw = dict(target=0.6, images=64, kimg=1.0, p_max=0.8)
    assert float(augment.ada_adjust(jnp.float32(0.5), jnp.float32(0.9), **kw)) == \
        pytest.approx(0.5 + 0.064)
    assert float(augment.ada_adjust(jnp.float32(0.5), jnp.float32(0.1), **kw)) == \
        pytest.approx(0.5 - 0.064)
    assert float(augment.ada_adjust(jnp.float32(0.01), jnp.float32(-1.0), **kw)) == 0.0
    assert float(augment.ada_adjust(jnp.float32(0.79), jnp.float32(1.0), **kw)) == \
        pytest.approx(0.8)
    assert float(augment.overfitting_signal(jnp.array([2.0, -1.0, 3.0, 0.5]))) == 0.5
    assert float(augment.overfitting_signal(jnp.array([2.0, -1.0]), jnp.array([1.0, -3.0]))) == 1.0




def _controller_run(d, params, real, fake, learning_rate, steps=16):
    """ADA's controller (`overfitting_signal`, `ada_adjust`) steering p from 0.3 while a
    relativistic D with ADA at p trains on a fixed real set against a fixed fake set (one
    program for every learning rate): (p after each step, r_t of each step)."""
    def step(carry, i):
        q, opt, p = carry
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(3), i), 2 * len(real))

        def loss(q_):
            rl = d.apply({"params": q_}, augment.ada_batch(keys[:len(real)], real, p))
            fl = d.apply({"params": q_}, augment.ada_batch(keys[len(real):], fake, p))
            return losses.relativistic_d_loss(rl, fl), (rl, fl)

        (_, (rl, fl)), grads = jax.value_and_grad(loss, has_aux=True)(q)
        updates, opt = tx.update(grads, opt, q)
        r_t = augment.overfitting_signal(rl, fl)
        p = augment.ada_adjust(p, r_t, target=0.6, images=len(real), kimg=0.2, p_max=0.8)
        return (optax.apply_updates(q, updates), opt, p), (p, r_t)

    tx = optax.adam(learning_rate, b1=0.0, b2=0.99)
    _, (ps, rts) = jax.lax.scan(step, (params, tx.init(params), jnp.float32(0.3)),
                                jnp.arange(steps))
    return ps, rts


def test_controller_raises_p_when_d_overfits_and_lowers_it_when_not():
    d = R3GANDiscriminator(widths=(8, 8), blocks=(1, 1), group_size=8)
    rng = np.random.default_rng(0)
    real = jnp.asarray(np.tanh(rng.normal(size=(16, 8, 8, 1)).cumsum(1)), jnp.float32)
    fake = jnp.asarray(rng.uniform(-1, 1, (16, 8, 8, 1)), jnp.float32)
    params = d.init(jax.random.PRNGKey(1), real)["params"]
    run = jax.jit(lambda lr: _controller_run(d, params, real, fake, lr))
    # D learns the fixed sets apart (learning rate 1e-2): r_t -> 1 > 0.6, p rises to p_max.
    ps, rts = map(np.asarray, run(1e-2))
    assert rts[-1] > 0.6 and ps[-1] == pytest.approx(0.8) and ps.max() <= 0.8
    # A D that does not learn (learning rate 0) cannot tell: r_t stays below 0.6, p falls to 0.
    ps, rts = map(np.asarray, run(0.0))
    assert (rts < 0.6).all() and ps[-1] == 0.0


def assert_p_follows_the_controller(history, p0, target, images, kimg, p_max):
    """The step's p after each iteration = ada_adjust(its p, its logged r_t), in float64."""
    p = p0
    for h in history:
        assert h["ada_p"] == pytest.approx(p, abs=1e-6)
        p = float(np.clip(p + np.sign(h["ada_rt"] - target) * images / (kimg * 1000), 0, p_max))
    return p


# --- the step on 8 devices, resume with p, mixed precision ----------------------------------

FULL = {"train.penalty_every": "2", "augment.diffaugment": "color"}


@pytest.fixture(scope="module")
def one_device_run():
    """The reference: the full tiny config (lazy R1/R2, ADA, DiffAugment) on one device, run
    once for both drivers' comparisons."""
    cfg = tiny_r3gan(**FULL)
    batches = make_batches(cfg)
    d1, s1, h1 = run_steps(cfg, "shard_map", 1, batches)
    return cfg, batches, d1.get_state(s1), h1


@pytest.mark.parametrize("driver_name", ["shard_map", "pmap"])
def test_eight_devices_match_one_device(one_device_run, driver_name):
    cfg, batches, ref, h1 = one_device_run
    d8, s8, h8 = run_steps(cfg, driver_name, 8, batches)
    got = d8.get_state(s8)
    assert_gan_runs_match(got, ref, h8, h1)
    assert float(got.ada_p) == pytest.approx(float(ref.ada_p), abs=1e-7)
    assert float(ref.ada_p) != 0.3  # p moved, so its comparison can fail
    a = cfg.augment
    want_p = assert_p_follows_the_controller(h1, a.ada_p, a.ada_target, cfg.train.batch_size,
                                             a.ada_kimg, a.ada_p_max)
    assert float(ref.ada_p) == pytest.approx(want_p, abs=1e-6)
    assert h1[0]["r1"] > 0 and h1[1]["r1"] == 0.0 and h1[2]["r1"] > 0  # lazy: every 2nd


def test_bfloat16_steps_are_finite():
    """The recipe's own settings (R1/R2 every step, ADA) in bfloat16 on 2 devices."""
    cfg = tiny_r3gan(**{"model.dtype": "bfloat16"})
    _, state, history = run_steps(cfg, "shard_map", 2, make_batches(cfg))
    assert int(state.nonfinite_count) == 0
    assert all(np.isfinite(v) for h in history for v in h.values())


def test_torch_peer_has_the_parameter_count_of_the_bench_model():
    torch = pytest.importorskip("torch")
    del torch
    from genart_jax.bench import harness as bench
    from genart_jax.bench.peers import torch_r3gan

    cfg = load_config("bench_r3gan64", {"model.r3gan.widths": "(16, 16, 8)",
                                        "model.r3gan.blocks": "(1, 2, 1)",
                                        "data.image_size": "16", "model.latent_dim": "8"})
    name, kwargs = bench.peer_for(cfg)
    assert name == "torch_r3gan"
    g, d = torch_r3gan.build(kwargs["widths"], kwargs["blocks"], kwargs["expansion"],
                             kwargs["group_size"], kwargs["nz"], kwargs["channels"])
    state = abstract_state(cfg)
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    assert sum(p.numel() for p in g.parameters()) == count(state.g_params)
    assert sum(p.numel() for p in d.parameters()) == count(state.d_params)
    assert bench.peer_for(apply_overrides(cfg, {"augment.ada": "adaptive"})) is None
