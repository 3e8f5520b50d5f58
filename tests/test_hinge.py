"""The hinge loss (SNGAN/BigGAN), added through the GAN-loss registry: its terms against float64
formulas and their closed-form gradients, the registry and config validation, and a GAN trained
with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax import losses
from genart_jax.config import ConfigError, load_config
from tests.test_parallel import make_batches, run_steps


@pytest.fixture
def logits():
    rng = np.random.default_rng(3)
    return rng.normal(0, 2, 97).astype(np.float32), rng.normal(0, 2, 61).astype(np.float32)


def test_hinge_terms_match_float64_formulas(logits):
    real, fake = logits
    r64, f64 = real.astype(np.float64), fake.astype(np.float64)
    want_d = np.mean(np.maximum(0, 1 - r64)) + np.mean(np.maximum(0, 1 + f64))
    np.testing.assert_allclose(losses.hinge_d_loss(real, fake), want_d, rtol=1e-6)
    np.testing.assert_allclose(losses.hinge_g_loss(fake), -np.mean(f64), rtol=1e-6)


def test_hinge_gradients_are_the_closed_form(logits):
    real, fake = logits
    g_real, g_fake = jax.grad(losses.hinge_d_loss, argnums=(0, 1))(real, fake)
    # d/dr_i = -1/n where the real margin is violated (r_i < 1), else 0; fakes where f_i > -1
    np.testing.assert_allclose(g_real, np.where(real < 1, -1.0 / real.size, 0.0), rtol=1e-6)
    np.testing.assert_allclose(g_fake, np.where(fake > -1, 1.0 / fake.size, 0.0), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(losses.hinge_g_loss)(fake), -1.0 / fake.size, rtol=1e-6)
    # at D = 0 both margins are violated: D's loss is 2 whatever the batch
    assert float(losses.hinge_d_loss(jnp.zeros(5), jnp.zeros(3))) == 2.0


def test_the_registry_holds_every_objective_once_and_config_validates_against_it():
    assert {"minimax", "relativistic", "hinge"} <= set(losses.GAN_LOSSES)
    hinge = losses.gan_loss("hinge")
    assert not hinge.g_uses_real and not hinge.paired_ada
    with pytest.raises(ValueError, match="registered already"):
        losses.register_gan_loss(hinge)
    with pytest.raises(ValueError, match=r"unknown GAN loss 'hing'.*'hinge'"):
        losses.gan_loss("hing")
    assert load_config("dcgan_digits", {"train.gan_loss": "hinge"}).train.gan_loss == "hinge"
    with pytest.raises(ConfigError, match=r"train.gan_loss.*'hinge'"):
        load_config("dcgan_digits", {"train.gan_loss": "wasserstein"})


def test_a_gan_trains_with_the_hinge_loss_on_two_devices():
    cfg = load_config("gan_mlp_digits", {
        "train.gan_loss": "hinge", "train.batch_size": "16", "model.latent_dim": "8",
        "model.mlp_gan.g_hidden": "(16,)", "model.mlp_gan.d_hidden": "(16,)",
        "data.image_size": "8"})
    _, state, history = run_steps(cfg, "shard_map", 2, make_batches(cfg))
    assert int(state.nonfinite_count) == 0 and len(history) >= 2
    # D's hinge loss starts near 2 (logits near 0) and is never negative
    assert history[0]["d_loss"] == pytest.approx(2.0, abs=0.5)
    assert all(h["d_loss"] >= 0 and np.isfinite(h["g_loss"]) for h in history)
