"""The discretised mixture of logistics (genart_jax.dmol) against a float64 NumPy reference
written here from the definition, its normalisation over every value of a pixel, and its
sampler against its own probabilities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_expit, logsumexp

from genart_jax import dmol

# Every call compiled (op-by-op dispatch compiles each operation separately: slower here).
log_prob = jax.jit(dmol.log_prob, static_argnames="bits")
log_likelihood = jax.jit(dmol.log_likelihood, static_argnames="bits")
sample = jax.jit(dmol.sample, static_argnames=("channels", "bits", "greedy"))


def f32(a):
    return np.asarray(a, np.float32)


def random_params(rng, lead, channels, mixtures, log_scale=(-4.0, 0.5), mean=(-1.2, 1.2)):
    """Network outputs (lead..., P) in the layout of genart_jax.dmol, float64."""
    c, m = channels, mixtures
    k = c * (c - 1) // 2
    parts = [rng.normal(size=(*lead, m)),  # logits
             rng.uniform(*mean, size=(*lead, c * m)),  # means
             rng.uniform(*log_scale, size=(*lead, c * m)),  # log scales
             rng.normal(size=(*lead, k * m))]  # coefficients before tanh
    return np.concatenate(parts, axis=-1)


def reference_log_prob(params, values, channels, bits=8):
    """log P(pixel) from the definition, float64, one pixel at a time: P_m(x_c | x_<c) is the
    logistic CDF's increase over x_c's bin, the edge bins reaching to -inf / +inf."""
    c = channels
    top = 2**bits - 1
    per_mix = 1 + 2 * c + c * (c - 1) // 2
    m = params.shape[-1] // per_mix
    flat_p = params.reshape(-1, params.shape[-1]).astype(np.float64)
    flat_v = values.reshape(-1, c)
    out = []
    for p, v in zip(flat_p, flat_v, strict=True):
        logits = p[:m]
        means = p[m:m + c * m].reshape(c, m)
        log_scales = np.maximum(p[m + c * m:m + 2 * c * m].reshape(c, m), -7.0)
        coeffs = np.tanh(p[m + 2 * c * m:].reshape(-1, m))
        x = 2.0 * v / top - 1.0
        log_w = logits - logsumexp(logits)
        per_comp = []
        for j in range(m):
            total = log_w[j]
            for ch in range(c):
                mean = means[ch, j] + sum(coeffs[ch * (ch - 1) // 2 + i, j] * x[i]
                                          for i in range(ch))
                s = math.exp(log_scales[ch, j])
                lo = -np.inf if v[ch] == 0 else (x[ch] - 1.0 / top - mean) / s
                hi = np.inf if v[ch] == top else (x[ch] + 1.0 / top - mean) / s
                # log(F(hi) - F(lo)), F the logistic CDF, as log(A - B) = log A + log(1 - B / A)
                # with A > B the larger CDF (left of the mean) or survival (right) term
                if lo + hi > 0:
                    a, b = log_expit(-lo), log_expit(-hi)
                else:
                    a, b = log_expit(hi), log_expit(lo)
                total += a + math.log1p(-math.exp(b - a))
            per_comp.append(total)
        out.append(logsumexp(per_comp))
    return np.array(out).reshape(values.shape[:-1])


@pytest.mark.parametrize("channels,mixtures", [(1, 3), (3, 4), (2, 1)])
def test_log_prob_matches_float64_reference(channels, mixtures):
    rng = np.random.default_rng(channels * 10 + mixtures)
    params = random_params(rng, (2, 3, 4), channels, mixtures)
    params[0, 0, 0, mixtures + channels * mixtures] = -12.0  # below the clamp at -7
    values = rng.integers(0, 256, size=(2, 3, 4, channels))
    values[0, 0] = 0  # the edge bins
    values[1, 2] = 255
    got = log_prob(f32(params), values.astype(np.uint8))
    assert got.dtype == jnp.float32 and got.shape == (2, 3, 4)
    want = reference_log_prob(params, values, channels)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4)
    total = log_likelihood(f32(params), values.astype(np.uint8))
    np.testing.assert_allclose(total, want.reshape(2, -1).sum(-1), rtol=2e-5)


def test_float64_in_float64_out_and_float_images_are_rounded_to_their_bin():
    rng = np.random.default_rng(1)
    params = random_params(rng, (1, 2, 2), 3, 2)
    values = rng.integers(0, 256, size=(1, 2, 2, 3))
    with jax.enable_x64(True):
        got = log_prob(jnp.asarray(params), jnp.asarray(values))
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, reference_log_prob(params, values, 3), rtol=1e-10)
    as_float = f32(values / 127.5 - 1.0)  # the package's model range
    np.testing.assert_array_equal(jax.jit(dmol.pixel_values)(as_float), values)
    np.testing.assert_array_equal(log_prob(f32(params), as_float),
                                  log_prob(f32(params), values.astype(np.uint8)))
    bf16 = log_prob(params.astype(jnp.bfloat16), values.astype(np.uint8))
    assert bf16.dtype == jnp.float32


def _all_values(channels, bits):
    grid = np.stack(np.meshgrid(*[np.arange(2**bits)] * channels, indexing="ij"), -1)
    return grid.reshape(-1, 1, 1, channels)


@pytest.mark.parametrize("channels,bits,log_scale,mean", [
    (1, 8, (-9.0, -6.0), (-1.0, 1.0)),  # narrower than a bin (clamped at -7)
    (1, 8, (2.0, 4.0), (-3.0, 3.0)),  # wide, centres outside [-1, 1]: mass on the edges
    (2, 8, (-4.0, 0.0), (-1.2, 1.2)),  # every pair of 8-bit values, channel dependence
    (3, 5, (-3.0, 0.0), (-1.2, 1.2)),  # every RGB triple at 5 bits (VDVAE's FFHQ-256)
])
def test_probabilities_of_every_value_of_a_pixel_sum_to_one(channels, bits, log_scale, mean):
    rng = np.random.default_rng(bits + channels)
    params = random_params(rng, (1, 1, 1), channels, 3, log_scale, mean)
    values = _all_values(channels, bits)
    lp = log_prob(f32(np.broadcast_to(params, (len(values), 1, 1, params.shape[-1]))),
                  values.astype(np.int32), bits=bits)
    assert abs(np.exp(np.asarray(lp, np.float64)).sum() - 1.0) < 2e-5


def test_rgb_marginal_of_red_is_the_mixture_of_the_red_logistics():
    """Summed over all 65,536 (green, blue) pairs, an 8-bit RGB pixel's probability is its red
    value's probability under the same mixture with red's logistics alone: green and blue are
    normalised given red, whatever their dependence on it."""
    rng = np.random.default_rng(7)
    m = 3
    rgb = random_params(rng, (1, 1, 1), 3, m)
    red = np.concatenate([rgb[..., :m], rgb[..., m:2 * m], rgb[..., 4 * m:5 * m]], -1)
    gb = _all_values(2, 8)[:, 0, 0]
    fn = jax.jit(lambda p, v: jnp.exp(dmol.log_prob(p, v).astype(jnp.float32)).sum())
    p_rgb = f32(np.broadcast_to(rgb, (len(gb), 1, 1, 10 * m)))
    for r in (0, 97, 255):
        values = np.concatenate([np.full((len(gb), 1), r), gb], -1).reshape(-1, 1, 1, 3)
        joint = float(fn(p_rgb, values.astype(np.int32)))
        marginal = math.exp(reference_log_prob(red, np.array([[[[r]]]]), 1).item())
        assert abs(joint - marginal) < 1e-5 + 1e-4 * marginal, (r, joint, marginal)


def test_samples_follow_the_probabilities_and_the_channel_dependence():
    """RGB at 2 bits (64 values, strong coefficients): the frequencies of 20,000 draws of one
    pixel against the 64 probabilities; and 8-bit greyscale draws against its mean and spread."""
    rng = np.random.default_rng(3)
    n = 20_000
    params = random_params(rng, (1, 1, 1), 3, 2, (-1.5, -0.5), (-0.8, 0.8))
    params[..., -6:] = 2.0 * np.sign(rng.normal(size=6))  # coefficients near +-1
    p32 = f32(np.broadcast_to(params, (n, 1, 1, params.shape[-1])))
    draws = sample(jax.random.key(0), p32, channels=3, bits=2)
    assert draws.dtype == jnp.uint8 and draws.shape == (n, 1, 1, 3) and int(draws.max()) <= 3
    codes = np.asarray(draws, np.int64).reshape(n, 3) @ np.array([16, 4, 1])
    freq = np.bincount(codes, minlength=64) / n
    values = _all_values(3, 2)
    prob = np.exp(reference_log_prob(np.broadcast_to(params, (64, 1, 1, params.shape[-1])),
                                     values, 3, bits=2)).reshape(-1)
    assert abs(prob.sum() - 1) < 1e-9
    assert 0.5 * np.abs(freq - prob).sum() < 0.03  # expected ~0.01 at n = 20,000

    grey = random_params(rng, (1, 1, 1), 1, 3, (-3.0, -1.0), (-0.9, 0.9))
    g32 = f32(np.broadcast_to(grey, (n, 1, 1, 9)))
    x = np.asarray(sample(jax.random.key(1), g32, channels=1), np.float64).reshape(-1)
    p = np.exp(reference_log_prob(np.broadcast_to(grey, (256, 1, 1, 9)),
                                  np.arange(256).reshape(-1, 1, 1, 1), 1)).reshape(-1)
    k = np.arange(256)
    mean = (p * k).sum()
    std = math.sqrt((p * (k - mean) ** 2).sum())
    assert abs(x.mean() - mean) < 4 * std / math.sqrt(n)
    assert abs(x.std() - std) < 0.03 * std


def test_greedy_sampling_is_the_quantised_centres_given_the_quantised_channels():
    """One component, scales far below a bin: red's centre 0.3 -> bin 166; green's mean moves
    with red's quantised value (tanh(a) * x_r), blue's with red and green."""
    means = np.array([0.3, -0.2, 0.1])
    coeffs = np.array([0.5, -0.25, 0.75])  # G|R, B|R, B|G after tanh
    params = np.concatenate([[0.0], means, [-7.0] * 3, np.arctanh(coeffs)])[None, None, None]
    x = sample(jax.random.key(0), f32(params), channels=3, greedy=True)
    again = sample(jax.random.key(1), f32(params), channels=3, greedy=True)
    np.testing.assert_array_equal(x, again)
    centre = lambda y: int(np.clip(np.round((y + 1) * 127.5), 0, 255))
    r = centre(means[0])
    g = centre(means[1] + coeffs[0] * (r / 127.5 - 1))
    b = centre(means[2] + coeffs[1] * (r / 127.5 - 1) + coeffs[2] * (g / 127.5 - 1))
    assert np.asarray(x).reshape(-1).tolist() == [r, g, b]


def test_gradients_are_finite_at_extreme_parameters():
    rng = np.random.default_rng(5)
    params = random_params(rng, (2, 2, 2), 3, 2)
    params[0, 0, 0, 2:8] = 40.0  # means far right of every bin
    params[0, 0, 1, 8:14] = 30.0  # scales far wider than the data range
    params[1, 1, 1, 8:14] = -30.0  # far narrower (clamped)
    values = rng.integers(0, 256, size=(2, 2, 2, 3))
    values[0, 0, 0] = [0, 128, 255]
    value, grad = jax.jit(jax.value_and_grad(
        lambda p, x: jnp.sum(dmol.log_likelihood(p, x))))(f32(params), values)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_layout_errors_are_clear():
    assert dmol.num_params(3, 10) == 100 and dmol.num_params(1, 10) == 30
    with pytest.raises(ValueError, match="multiple of 10"):
        log_prob(np.zeros((1, 2, 2, 15), np.float32), np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        log_prob(np.zeros((1, 2, 2, 10), np.float32), np.zeros((1, 3, 2, 3), np.uint8))
