"""GAN objectives against direct float64 evaluation of the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax import losses


def sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(0, 3, 257).astype(np.float32), rng.normal(0, 3, 129).astype(np.float32)


def test_minimax_value_matches_float64_formula(logits):
    real, fake = logits
    expected = np.mean(np.log(sigmoid64(real))) + np.mean(np.log(1 - sigmoid64(fake)))
    got = jax.jit(losses.minimax_value)(real, fake)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(losses.discriminator_loss)(real, fake), -expected,
                               rtol=1e-6)


def test_generator_losses_match_float64_formulas(logits):
    _, fake = logits
    d = sigmoid64(fake)
    ns = jax.jit(losses.generator_loss, static_argnums=1)(fake, "non_saturating")
    sat = jax.jit(losses.generator_loss, static_argnums=1)(fake, "saturating")
    np.testing.assert_allclose(ns, -np.mean(np.log(d)), rtol=1e-6)
    np.testing.assert_allclose(sat, np.mean(np.log(1 - d)), rtol=1e-6)


def test_saturating_gradient_vanishes_where_non_saturating_does_not():
    # D confidently rejects the fakes: logit -10, D(G(z)) ~ 4.5e-5.
    fake = jnp.full((4,), -10.0)
    g_sat = jax.grad(lambda f: losses.generator_loss(f, "saturating"))(fake)
    g_ns = jax.grad(lambda f: losses.generator_loss(f, "non_saturating"))(fake)
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l); d/dl -log sigmoid(l) = -(1 - sigmoid(l)).
    np.testing.assert_allclose(g_sat, -sigmoid64(-10.0) / 4, rtol=1e-4)
    np.testing.assert_allclose(g_ns, -(1 - sigmoid64(-10.0)) / 4, rtol=1e-6)
    assert abs(float(g_sat[0])) < 1e-4 < abs(float(g_ns[0]))


def test_stable_at_extreme_logits():
    big = jnp.array([-200.0, -50.0, 0.0, 50.0, 200.0])
    for value in (losses.minimax_value(big, big), losses.generator_loss(big, "saturating"),
                  losses.generator_loss(big, "non_saturating")):
        assert np.isfinite(float(value))
    # log sigmoid(-200) = -200 up to e^-200, so the mean is exact in float32.
    np.testing.assert_allclose(losses.generator_loss(jnp.array([-200.0])), 200.0, rtol=1e-6)


def _value_of_optimal_discriminator(p_data, p_g, n=4096):
    """V(D*, G) by the estimator, with samples in exact proportion to the distributions."""
    p_data, p_g = np.asarray(p_data, np.float64), np.asarray(p_g, np.float64)
    d_star = p_data / (p_data + p_g)
    logit = np.log(d_star) - np.log1p(-d_star)
    real = np.repeat(logit, np.round(p_data * n).astype(int))
    fake = np.repeat(logit, np.round(p_g * n).astype(int))
    return float(losses.minimax_value(jnp.asarray(real, jnp.float32),
                                      jnp.asarray(fake, jnp.float32)))


def test_optimal_discriminator_gives_minus_log_4_when_distributions_match():
    p = [0.125, 0.25, 0.5, 0.125]
    np.testing.assert_allclose(_value_of_optimal_discriminator(p, p), -np.log(4.0), rtol=1e-6)


def test_optimal_discriminator_value_is_minus_log_4_plus_twice_jsd():
    p_data = np.array([0.125, 0.25, 0.5, 0.125])
    p_g = np.array([0.25, 0.25, 0.25, 0.25])
    m = (p_data + p_g) / 2
    jsd = 0.5 * np.sum(p_data * np.log(p_data / m)) + 0.5 * np.sum(p_g * np.log(p_g / m))
    np.testing.assert_allclose(_value_of_optimal_discriminator(p_data, p_g),
                               -np.log(4.0) + 2 * jsd, rtol=1e-5)


def test_bfloat16_logits_give_float32_loss():
    x = jnp.linspace(-3, 3, 16, dtype=jnp.bfloat16)
    assert losses.generator_loss(x).dtype == jnp.float32
    assert losses.discriminator_loss(x, x).dtype == jnp.float32


def test_shape_and_kind_errors():
    with pytest.raises(ValueError, match="1-D batch of logits"):
        losses.discriminator_loss(jnp.zeros((4, 1)), jnp.zeros(4))
    with pytest.raises(ValueError, match="unknown generator loss"):
        losses.generator_loss(jnp.zeros(4), "wasserstein")
