"""The hierarchical VAE (genart_jax.models.hvae): VDVAE's parameter count, shapes at two
configurations, the reference's initial scaling, the Gaussian KL against closed forms, sampling
temperatures, determinism and per-example randomness, bfloat16 compute, finite gradients, and
the ELBO falling under Adam on a tiny data set. One tiny network (`TINY`) is compiled once per
program and shared, so the file runs in seconds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genart_jax import dmol
from genart_jax.models import hvae

# 8 px RGB, resolutions 8 (3x3 convs) and 1 (1x1 convs), one latent group each, one encoder
# block (the pooling one): as few convolutions as a hierarchy allows, for fast compiles.
TINY = dict(image_size=8, channels=3, resolutions=(8, 1), widths=(8, 8), enc_blocks=(1, 0),
            dec_blocks=(1, 1), zdim=2, num_mixtures=2)
# 16 px greyscale, widths changing between resolutions, 1x1 convs at 2 px, no start bias above
# 8 px, two groups at 8 px.
OTHER = dict(image_size=16, channels=1, resolutions=(16, 8, 2, 1), widths=(8, 12, 16, 16),
             enc_blocks=(2, 1, 1, 1), dec_blocks=(1, 2, 1, 1), zdim=3, num_mixtures=1,
             no_bias_above=8)
CIFAR_ENC = "32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3"  # openai/vdvae hps.py, cifar10
CIFAR_DEC = "1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21"


def images(n, size=8, channels=3, seed=0):
    """uint8 pictures, not noise: a flat background colour and a square of another colour."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, size, size, channels), np.uint8)
    for i in range(n):
        x[i] = rng.integers(0, 256, channels)
        s = rng.integers(2, size // 2 + 1)
        r, c = rng.integers(0, size - s + 1, 2)
        x[i, r:r + s, c:c + s] = rng.integers(0, 256, channels)
    return x


def example_keys(seed, n):
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


@pytest.fixture(scope="module")
def tiny():
    """The TINY model, its initial variables, its compiled training loss and gradient, and its
    compiled sampler of 4 images at a temperature per group."""
    model = hvae.HVAE(**TINY)
    x = images(4)
    variables = jax.jit(lambda k, x: model.init(k, x, key=k))(jax.random.key(0), x)

    def loss(params, x, keys):
        out, kls = model.apply({"params": params}, x, key=keys)
        terms = hvae.elbo_terms(out, x, kls)
        return hvae.loss_per_dim(terms, x[0].size), (out, kls, terms)

    def sample(key, temperature):
        return model.apply(variables, 4, key=key, temperature=temperature, return_latents=True,
                           method=model.sample)

    return model, variables, jax.jit(jax.value_and_grad(loss, has_aux=True)), jax.jit(sample)


def test_gaussian_kl_matches_closed_form_and_monte_carlo():
    rng = np.random.default_rng(0)
    mq, mp = rng.normal(size=(2, 5))
    sq, sp = rng.uniform(-1.0, 0.7, size=(2, 5))  # log standard deviations
    got = jax.jit(hvae.gaussian_kl)(*(np.float32(a) for a in (mq, sq, mp, sp)))
    var_q, var_p = np.exp(2 * sq), np.exp(2 * sp)
    want = 0.5 * (np.log(var_p / var_q) + (var_q + (mq - mp) ** 2) / var_p - 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    z = mq + np.exp(sq) * rng.normal(size=(200_000, 5))  # E_q[log q(z) - log p(z)]
    log_q = -0.5 * ((z - mq) / np.exp(sq)) ** 2 - sq
    log_p = -0.5 * ((z - mp) / np.exp(sp)) ** 2 - sp
    ratio = log_q - log_p
    assert np.all(np.abs(ratio.mean(0) - want) < 4 * ratio.std(0) / math.sqrt(len(z)))
    same = jax.jit(hvae.gaussian_kl)(np.float32(mq), np.float32(sq), np.float32(mq),
                                     np.float32(sq))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def test_vdvae_networks_have_the_reference_parameter_counts():
    """The counts of openai/vdvae's PyTorch `VAE` built with hps.py's cifar10 and imagenet32
    settings (sum of p.numel() over its parameters: 39,145,700 and 119,280,868; the README
    says 39M and 119M)."""
    assert hvae.count_params(**hvae.vdvae_cifar10()) == 39_145_700
    i32 = hvae.from_vdvae_strings("32x15,32d2,16x9,16d2,8x8,8d2,4x6,4d4,1x6",
                                  "1x2,4m1,4x4,8m4,8x9,16m8,16x19,32m16,32x40", 512)
    assert hvae.count_params(**i32) == 119_280_868
    assert hvae.HVAE(**hvae.vdvae_cifar10()).num_groups == 43
    assert hvae.param_count(hvae.HVAE(**TINY)) == hvae.count_params(**TINY)  # traced == formula


def test_vdvae_layer_strings_convert():
    assert hvae.from_vdvae_strings(CIFAR_ENC, CIFAR_DEC, 384) == {
        k: v for k, v in hvae.vdvae_cifar10().items()
        if k in ("resolutions", "widths", "enc_blocks", "dec_blocks")}
    assert hvae.from_vdvae_strings("8x2,8d4,2", "2x1,8m2", 16, "2:32")["widths"] == (16, 32)
    for enc, dec in [("8x2,4x1", "4x1,8m4"), ("8x2,8d2", "4,8m4"), ("8d2,4", "4,8x1"),
                     ("8d2,4", "4,8m2")]:
        with pytest.raises(ValueError):
            hvae.from_vdvae_strings(enc, dec, 8)


@pytest.mark.parametrize("config", [TINY, OTHER], ids=["rgb8", "grey16"])
def test_shapes_and_parameter_count(config):
    model = hvae.HVAE(**config)
    n, s, c = 2, config["image_size"], config["channels"]
    x = jax.ShapeDtypeStruct((n, s, s, c), jnp.uint8)
    key = jax.random.key(0)
    variables = jax.eval_shape(lambda x: model.init(key, x, key=key), x)
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(variables))
    assert count == hvae.count_params(**config)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    p = dmol.num_params(c, config["num_mixtures"])
    out, kls, zs = jax.eval_shape(
        lambda v, x: model.apply(v, x, key=key, return_latents=True), variables, x)
    groups = sum(config["dec_blocks"])
    assert (out.shape, out.dtype) == ((n, s, s, p), jnp.float32)
    assert (kls.shape, kls.dtype) == ((n, groups), jnp.float32)
    assert [z.shape[1:] for z in zs] == list(model.latent_shapes())
    assert model.latent_shapes()[0] == (1, 1, config["zdim"])  # the top group first
    assert model.latent_shapes()[-1] == (s, s, config["zdim"])
    sampled = jax.eval_shape(lambda v: model.apply(v, 3, key=key, method=model.sample),
                             variables)
    assert sampled.shape == (3, s, s, p)
    rec = jax.eval_shape(lambda v, x: model.apply(v, x, key=key, num_groups=1,
                                                  method=model.reconstruct), variables, x)
    assert rec.shape == (n, s, s, p)
    pictures = jax.eval_shape(lambda v: hvae.sample_images(model, v, key, 3, temperature=0.5),
                              variables)
    assert (pictures.shape, pictures.dtype) == ((3, s, s, c), jnp.uint8)
    recs = jax.eval_shape(lambda v, x: hvae.reconstruct_images(model, v, x, key, num_groups=1),
                          variables, x)
    assert (recs.shape, recs.dtype) == ((n, s, s, c), jnp.uint8)
    acts = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.encode), variables, x)
    assert [a.shape[1:] for a in acts] == [(r, r, w) for r, w in
                                           zip(config["resolutions"], config["widths"],
                                               strict=True)]


@pytest.mark.parametrize("change,match", [
    (dict(resolutions=(16, 1)), "start at the image size"),
    (dict(resolutions=(8, 3)), "each dividing"),
    (dict(widths=(8,)), "one width"),
    (dict(dec_blocks=(1, 0)), "decoder blocks must be >= 1"),
    (dict(enc_blocks=(0, 1)), "encoder"),
])
def test_bad_configurations_raise_clear_errors(change, match):
    with pytest.raises(ValueError, match=match):
        hvae.count_params(**{**TINY, **change})
    with pytest.raises(ValueError, match=match):
        hvae.param_count(hvae.HVAE(**{**TINY, **change}))


def test_initialisation_follows_the_reference(tiny):
    """The prior's last conv is zero (p(z) starts as N(0, I)), the residual blocks' last convs
    and z_proj are scaled by sqrt(1 / blocks), the rest is PyTorch's U(+-1/sqrt(fan_in)),
    biases zero, the output gain one."""
    _, variables, _, _ = tiny
    params = variables["params"]
    n_dec, n_enc = sum(TINY["dec_blocks"]), sum(TINY["enc_blocks"])

    def bound(kernel):
        return 1.0 / math.sqrt(math.prod(kernel.shape[:-1]))

    for g in range(n_dec):
        block = params[f"decoder_{g}"]
        assert not np.any(block["prior"]["Conv_3"]["kernel"])
        for kernel, scale in [(block["resnet"]["Conv_3"]["kernel"], n_dec),
                              (block["z_proj"]["kernel"], n_dec),
                              (block["enc"]["Conv_3"]["kernel"], 1),
                              (block["prior"]["Conv_0"]["kernel"], 1)]:
            b = bound(kernel) / math.sqrt(scale)
            assert b / 2 < np.abs(kernel).max() <= b
    for e in range(n_enc):
        kernel = params[f"encoder_{e}"]["Conv_3"]["kernel"]
        assert bound(kernel) / math.sqrt(n_enc) / 2 < np.abs(kernel).max() \
            <= bound(kernel) / math.sqrt(n_enc)
    assert all(not np.any(b) for b in jax.tree.leaves(
        jax.tree_util.tree_map_with_path(lambda p, v: v if p[-1].key == "bias" else 0, params)))
    np.testing.assert_array_equal(params["gain"], 1.0)


def test_training_pass_is_deterministic_with_finite_gradients(tiny):
    model, variables, loss_and_grad, _ = tiny
    x = images(4)
    (loss, (out, kls, terms)), grads = loss_and_grad(variables["params"], x, example_keys(1, 4))
    (again, _), grads2 = loss_and_grad(variables["params"], x, example_keys(1, 4))
    (other, _), _ = loss_and_grad(variables["params"], x, example_keys(2, 4))
    assert float(loss) == float(again) and float(loss) != float(other)
    jax.tree.map(np.testing.assert_array_equal, grads, grads2)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.sum(g**2)) for g in leaves) > 0
    # the prior's zero last conv receives a gradient, so the prior can leave N(0, I) (the top
    # group's state is its zero start bias at init: only the bias there)
    assert np.any(grads["decoder_0"]["prior"]["Conv_3"]["bias"])
    assert np.any(grads["decoder_1"]["prior"]["Conv_3"]["kernel"])
    assert np.all(np.asarray(kls) >= 0) and kls.shape == (4, model.num_groups)
    np.testing.assert_allclose(terms["rate"], np.asarray(kls).sum(-1), rtol=1e-6)
    np.testing.assert_allclose(
        terms["neg_elbo"], terms["distortion"] + terms["rate"], rtol=1e-6)
    np.testing.assert_allclose(terms["bits_per_dim"],
                               terms["neg_elbo"] / (8 * 8 * 3 * math.log(2)), rtol=1e-6)
    np.testing.assert_allclose(loss, np.mean(terms["neg_elbo"]) / 192, rtol=1e-6)
    np.testing.assert_allclose(
        terms["distortion"], -jax.jit(dmol.log_likelihood)(out, x), rtol=1e-6)


def test_examples_do_not_depend_on_the_rest_of_the_batch(tiny):
    """With one key per example, permuting the batch permutes the outputs: a batch split over
    devices draws what one device would (the package's 8 devices = 1 device property)."""
    _, variables, loss_and_grad, _ = tiny
    x, keys = images(4), example_keys(3, 4)
    perm = np.array([2, 0, 3, 1])
    (_, (out, kls, _)), _ = loss_and_grad(variables["params"], x, keys)
    (_, (out_p, kls_p, _)), _ = loss_and_grad(variables["params"], x[perm], keys[perm])
    np.testing.assert_allclose(out_p, np.asarray(out)[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kls_p, np.asarray(kls)[perm], rtol=1e-5, atol=1e-7)


def test_sampling_temperature_per_group(tiny):
    """At initialisation the prior is N(0, I) in every group, so z = t * eps: temperature 0 gives
    the same image for any key, and the latents scale with t group by group (t is traced: one
    compiled program for all temperatures)."""
    model, variables, _, sample = tiny
    g = model.num_groups
    cold_a, zs_a = sample(jax.random.key(1), jnp.zeros(g))
    cold_b, _ = sample(jax.random.key(2), jnp.zeros(g))
    np.testing.assert_array_equal(cold_a, cold_b)
    assert all(not np.any(z) for z in zs_a)
    warm_a, warm_zs = sample(jax.random.key(1), jnp.ones(g))
    warm_b, _ = sample(jax.random.key(2), jnp.ones(g))
    assert not np.allclose(warm_a, warm_b)
    mixed, mixed_zs = sample(jax.random.key(1), jnp.array([0.5, 0.0]))
    np.testing.assert_allclose(mixed_zs[0], 0.5 * np.asarray(warm_zs[0]), rtol=1e-6)
    assert not np.any(mixed_zs[1])
    _, other_zs = sample(jax.random.key(1), jnp.array([0.0, 1.0]))
    assert not np.any(other_zs[0])
    np.testing.assert_allclose(other_zs[1], warm_zs[1], rtol=1e-6)
    pixels = jax.jit(dmol.sample, static_argnames="channels")(jax.random.key(0), warm_a,
                                                              channels=3)
    assert pixels.dtype == jnp.uint8 and pixels.shape == (4, 8, 8, 3)
    with pytest.raises(ValueError, match="one per latent group"):
        model.apply(variables, 1, key=jax.random.key(0), temperature=[1.0, 1.0, 1.0],
                    method=model.sample)


def test_reconstruction_and_fixed_latents(tiny):
    """Reconstructing from every group's posterior is the training pass's output for the same
    keys; giving the top group's latent fixes what that group contributes."""
    model, variables, loss_and_grad, sample = tiny
    x, keys = images(4), example_keys(5, 4)
    (_, (out, _, _)), _ = loss_and_grad(variables["params"], x, keys)
    rec = jax.jit(lambda x, k: model.apply(variables, x, key=k, method=model.reconstruct))
    np.testing.assert_allclose(rec(x, keys), out, rtol=1e-6, atol=1e-6)
    fixed = jax.jit(lambda z0, k: model.apply(variables, 4, key=k, temperature=0.0,
                                              latents=(z0,), method=model.sample))
    zero = np.zeros((4, 1, 1, TINY["zdim"]), np.float32)
    cold, _ = sample(jax.random.key(0), jnp.zeros(model.num_groups))
    np.testing.assert_allclose(fixed(zero, jax.random.key(9)), cold, rtol=1e-6, atol=1e-6)
    moved = fixed(zero + 2.0, jax.random.key(9))
    assert not np.allclose(moved, cold)
    np.testing.assert_array_equal(moved, fixed(zero + 2.0, jax.random.key(10)))


def test_bfloat16_compute_keeps_float32_parameters_likelihood_and_kl(tiny):
    _, variables, loss_and_grad, _ = tiny
    model16 = hvae.HVAE(**TINY, dtype=jnp.bfloat16)
    x, keys = images(4), example_keys(1, 4)

    def loss16(params):
        out, kls = model16.apply({"params": params}, x, key=keys)
        return out, kls, hvae.loss_per_dim(hvae.elbo_terms(out, x, kls), x[0].size)

    out, kls, loss = jax.jit(loss16)(variables["params"])
    assert out.dtype == jnp.float32 and kls.dtype == jnp.float32 and loss.dtype == jnp.float32
    (loss32, (out32, kls32, _)), _ = loss_and_grad(variables["params"], x, keys)
    assert np.isfinite(float(loss)) and abs(float(loss) / float(loss32) - 1) < 0.02
    np.testing.assert_allclose(out, out32, atol=0.05)


def test_negative_elbo_falls_under_adam(tiny):
    """30 Adam steps on 4 pictures (the compiled training gradient reused): the negative ELBO
    falls from where it starts (about 9 bits per dimension: the initial DMoL spreads its mass
    over the whole range) by more than 0.8 bits per dimension."""
    _, variables, loss_and_grad, _ = tiny
    x = images(4, seed=1)
    tx = optax.adam(3e-2)
    params = variables["params"]
    opt_state = tx.init(params)

    @jax.jit
    def update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    bits = []
    for step in range(30):
        (_, (_, _, terms)), grads = loss_and_grad(params, x, example_keys(100 + step, 4))
        bits.append(float(np.mean(terms["bits_per_dim"])))
        params, opt_state = update(grads, opt_state, params)
    assert all(np.isfinite(bits))
    # measured: 8.82 -> 7.30 (Adam moves the DMoL's log scales by about lr per step)
    assert np.mean(bits[-3:]) < np.mean(bits[:3]) - 0.8, bits
