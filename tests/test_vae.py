"""The ELBO pieces against independent references (closed forms, Monte Carlo, SciPy, finite
differences, an exactly solvable linear-Gaussian model), and the VAE step across devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genart_jax import losses
from genart_jax.train.loop import build_training
from genart_jax.train.vae_step import Likelihood
from tests.conftest import load_config


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_closed_form_kl_equals_monte_carlo(x64):
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(3, 4))
    logvar = rng.normal(scale=0.7, size=(3, 4))
    n = 400_000
    z = losses.reparameterize(jax.random.PRNGKey(1), jnp.broadcast_to(mu, (n, 3, 4)),
                              jnp.broadcast_to(logvar, (n, 3, 4)))
    log_ratio = (losses.gaussian_log_density(z, mu, logvar)
                 - losses.standard_normal_log_density(z))  # (n, 3)
    mc, se = np.mean(log_ratio, axis=0), np.std(log_ratio, axis=0) / np.sqrt(n)
    closed = losses.gaussian_kl(jnp.asarray(mu), jnp.asarray(logvar))
    assert closed.dtype == jnp.float64
    assert np.all(np.abs(closed - mc) < 4 * se), (closed, mc, se)
    assert np.all(closed > 0)


def test_reparameterised_samples_have_the_posterior_moments(x64):
    mu, logvar = jnp.array([1.5, -2.0]), jnp.array([0.4, -1.2])
    z = losses.reparameterize(jax.random.PRNGKey(0), jnp.broadcast_to(mu, (200_000, 2)),
                              jnp.broadcast_to(logvar, (200_000, 2)))
    np.testing.assert_allclose(z.mean(0), mu, atol=0.01)
    np.testing.assert_allclose(z.var(0), np.exp(logvar), rtol=0.01)


def test_gradient_through_the_reparameterised_sample(x64):
    eps_key = jax.random.PRNGKey(3)

    def objective(params):  # E_q[f(z)], f(z) = sum(sin(z) + z^2), fixed noise
        mu, logvar = params
        z = losses.reparameterize(eps_key, jnp.broadcast_to(mu, (50_000, 3)),
                                  jnp.broadcast_to(logvar, (50_000, 3)))
        return jnp.mean(jnp.sum(jnp.sin(z) + z**2, axis=-1))

    params = (jnp.array([0.3, -0.5, 1.0]), jnp.array([-0.2, 0.1, -1.0]))
    grad = jax.grad(objective)(params)
    h = 1e-5
    for which in range(2):
        for i in range(3):
            up = [p.copy() for p in params]
            dn = [p.copy() for p in params]
            up[which] = up[which].at[i].add(h)
            dn[which] = dn[which].at[i].add(-h)
            fd = (objective(tuple(up)) - objective(tuple(dn))) / (2 * h)
            np.testing.assert_allclose(grad[which][i], fd, rtol=1e-6, atol=1e-8)
    # And the expectation's gradient itself: d/dmu = cos(mu) e^{-s2/2} + 2 mu,
    # d/dlogvar = (-sin(mu) e^{-s2/2} / 2 + 1) * s2, with s2 = exp(logvar).
    mu, logvar = params
    s2 = jnp.exp(logvar)
    np.testing.assert_allclose(grad[0], jnp.cos(mu) * jnp.exp(-s2 / 2) + 2 * mu, atol=0.02)
    np.testing.assert_allclose(grad[1], (-jnp.sin(mu) * jnp.exp(-s2 / 2) / 2 + 1) * s2, atol=0.02)


def test_likelihoods_match_scipy(x64):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 3, 1))
    mean = rng.uniform(-1, 1, (2, 3, 3, 1))
    ls = np.log(0.3)
    np.testing.assert_allclose(losses.gaussian_log_likelihood(x, mean, ls),
                               stats.norm.logpdf(x, mean, 0.3).reshape(2, -1).sum(1), rtol=1e-10)
    x01 = (rng.uniform(size=(2, 5)) > 0.5).astype(float)
    logits = rng.normal(size=(2, 5))
    np.testing.assert_allclose(losses.bernoulli_log_likelihood(x01, logits),
                               stats.bernoulli.logpmf(x01, 1 / (1 + np.exp(-logits))).sum(1),
                               rtol=1e-10)


def test_discretised_gaussian_is_a_normalised_distribution_over_256_levels(x64):
    levels = jnp.linspace(-1.0, 1.0, 256)[:, None]  # every 8-bit value, as one "pixel" each
    for mean, scale in [(0.1, 0.05), (-0.97, 0.2), (0.5, 1e-3), (1.3, 0.5)]:
        logp = losses.discretized_gaussian_log_likelihood(
            levels, jnp.full_like(levels, mean), jnp.log(scale))
        np.testing.assert_allclose(np.exp(logp).sum(), 1.0, atol=1e-9)
    # An interior bin's mass equals the CDF difference.
    got = losses.discretized_gaussian_log_likelihood(jnp.array([[0.0]]), jnp.array([[0.1]]),
                                                     jnp.log(0.2))
    h = 1 / 255
    np.testing.assert_allclose(np.exp(got), stats.norm.cdf(h, 0.1, 0.2)
                               - stats.norm.cdf(-h, 0.1, 0.2), rtol=1e-7)


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I): log p(x) = log N(x; b, W W^T + s^2 I)."""

    def __init__(self, w, b, s):
        self.w, self.b, self.s = w, b, s

    def log_px(self, x):
        cov = self.w @ self.w.T + self.s**2 * np.eye(len(self.b))
        return stats.multivariate_normal(self.b, cov).logpdf(x)

    def posterior(self, x):
        prec = np.eye(self.w.shape[1]) + self.w.T @ self.w / self.s**2
        cov = np.linalg.inv(prec)
        mu = (cov @ self.w.T @ (x - self.b).T).T / self.s**2
        return mu, cov

    def bounds(self, x, mu, logvar, k, key):
        """(ELBO estimate, IWAE_k) per example with q = N(mu, diag(exp(logvar)))."""
        n = x.shape[0]
        z = losses.reparameterize(key, jnp.broadcast_to(mu, (k, *mu.shape)),
                                  jnp.broadcast_to(logvar, (k, *logvar.shape)))
        mean = z @ self.w.T + self.b[None, None, :]  # (k, n, D)
        log_px_z = losses.gaussian_log_likelihood(
            jnp.broadcast_to(x, mean.shape).reshape(k * n, -1), mean.reshape(k * n, -1),
            jnp.log(self.s)).reshape(k, n)
        elbo = log_px_z.mean(0) - losses.gaussian_kl(mu, logvar)
        iwae = losses.iwae_bound(log_px_z, losses.standard_normal_log_density(z),
                                 losses.gaussian_log_density(z, mu, logvar))
        return np.asarray(elbo), np.asarray(iwae)


def test_exact_posterior_makes_the_bounds_tight(x64):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 3)))
    model = LinearGaussian(q * np.array([2.0, 1.0, 0.5]), rng.normal(size=6), 0.4)
    x = rng.normal(size=(5, 6)) * 2
    mu, cov = model.posterior(x)
    assert np.allclose(cov, np.diag(np.diag(cov)))  # orthogonal columns: diagonal posterior
    logvar = np.broadcast_to(np.log(np.diag(cov)), mu.shape)
    elbo, iwae = model.bounds(x, jnp.asarray(mu), jnp.asarray(logvar), 20_000,
                              jax.random.PRNGKey(0))
    np.testing.assert_allclose(elbo, model.log_px(x), rtol=0, atol=0.06)  # MC over log p(x|z)
    np.testing.assert_allclose(iwae, model.log_px(x), rtol=0, atol=1e-8)  # every weight exact


def test_elbo_below_iwae_below_log_likelihood_and_tighter_with_k(x64):
    rng = np.random.default_rng(1)
    model = LinearGaussian(rng.normal(size=(5, 2)), rng.normal(size=5), 0.5)
    x = np.repeat(rng.normal(size=(1, 5)) * 2, 4000, axis=0)  # one x, many repetitions
    mu, cov = model.posterior(x)
    logvar = np.broadcast_to(np.log(np.diag(cov)) + 1.0, mu.shape)  # a mean-field, wider q
    mu = mu + 0.3  # and off-centre
    log_px = model.log_px(x[:1])[()]
    means = {}
    for k in (1, 10, 100):
        elbo, iwae = model.bounds(x, jnp.asarray(mu), jnp.asarray(logvar), k,
                                  jax.random.PRNGKey(k))
        means[k] = iwae.mean()
        if k == 1:  # IWAE_1 and the closed-form-KL ELBO estimate the same number
            elbo_mean, elbo_se = elbo.mean(), elbo.std() / np.sqrt(len(elbo))
            iwae_se = iwae.std() / np.sqrt(len(iwae))
            assert abs(iwae.mean() - elbo_mean) < 4 * np.hypot(elbo_se, iwae_se)
    assert elbo_mean + 4 * elbo_se < log_px
    assert means[1] < means[10] < means[100] < log_px
    assert log_px - means[100] < 0.25 * (log_px - elbo_mean)


def test_kl_warmup_and_bits_per_dim():
    assert float(losses.kl_warmup(jnp.int32(50), 100)) == 0.5
    assert float(losses.kl_warmup(jnp.int32(500), 100)) == 1.0
    assert float(losses.kl_warmup(jnp.int32(0), 0)) == 1.0
    np.testing.assert_allclose(losses.bits_per_dim(jnp.float32(784 * np.log(2)), 784), 1.0)


def tiny_vae(**overrides):
    base = {"model.mlp_vae.hidden": "(32, 16)", "model.latent_dim": "4", "train.batch_size": "16"}
    return load_config("vae_digits", {**base, **overrides})


@pytest.mark.parametrize("overrides", [
    {},
    {"model.arch": "conv", "model.conv_vae.width": "4", "data.image_size": "16",
     "vae.likelihood": "gaussian", "model.num_classes": "10"},
], ids=["mlp-bernoulli", "conv-gaussian-conditional"])
def test_vae_step_on_eight_devices_matches_one_device(overrides):
    cfg = tiny_vae(**overrides)
    rng = np.random.default_rng(0)
    s = cfg.data.image_size
    batches = [{"image": rng.uniform(-1, 1, (1, 16, s, s, 1)).astype(np.float32),
                "label": rng.integers(0, 10, (1, 16)).astype(np.int32)} for _ in range(3)]
    results = []
    for driver_name, n in [("shard_map", 1), ("shard_map", 8), ("pmap", 8)]:
        from genart_jax.config import apply_overrides
        driver, init_fn = build_training(apply_overrides(cfg, {"train.driver": driver_name}),
                                         jax.devices()[:n])
        state = driver.init_state(init_fn, jax.random.PRNGKey(0))
        for b in batches:
            state, metrics = driver.step(state, driver.put_batch(b))
        results.append((driver.get_state(state), driver.get_metrics(metrics)))
    (ref, ref_m), *others = results
    for state, m in others:
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        for k in ("neg_elbo", "kl", "grad_norm"):
            np.testing.assert_allclose(m[k], ref_m[k], rtol=1e-4, err_msg=k)
    assert ref_m["neg_elbo"] > ref_m["kl"] > 0


def test_likelihood_targets():
    x = jnp.array([-1.0, 0.0, 1.0])
    assert np.allclose(Likelihood("bernoulli", binarize=False).target(x, None), [0, 0.5, 1])
    b = Likelihood("bernoulli").target(jnp.zeros(10_000), jax.random.PRNGKey(0))
    assert set(np.unique(b)) == {0.0, 1.0} and abs(float(b.mean()) - 0.5) < 0.02
    assert np.allclose(Likelihood("gaussian").target(x, None), x)
