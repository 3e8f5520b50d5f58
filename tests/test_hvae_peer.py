"""The PyTorch eager peer of the hierarchical VAE (genart_jax/bench/peers/hvae.py): the JAX
model's parameter count at two tiny configurations and VDVAE's CIFAR-10 network (built on the
meta device, nothing allocated); with the JAX parameters copied in and the JAX model's own noise
fed in, the same per-group KLs, distortion and loss per dimension; VDVAE's train step (AdamW,
clip, skip, EMA) lowering the loss, skipping above its threshold, and running in bfloat16.
Skipped without PyTorch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax.models import hvae

# tests/test_hvae.py's two configurations (8 px RGB; 16 px greyscale, widths changing) and
# its pictures of a square on a flat background
from tests.test_hvae import OTHER, TINY, images

torch = pytest.importorskip("torch")
peer = pytest.importorskip("genart_jax.bench.peers.hvae")

# RGB, three resolutions, two groups at 4 px, widths changing (the equality test's third case)
THREE = dict(image_size=8, channels=3, resolutions=(8, 4, 1), widths=(8, 12, 8),
             enc_blocks=(1, 2, 1), dec_blocks=(1, 2, 1), zdim=2, num_mixtures=3)


def torch_count(kwargs) -> int:
    with torch.device("meta"):
        model = peer.build(**kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kwargs", [TINY, OTHER, THREE], ids=["tiny", "other", "three"])
def test_parameter_count_equals_the_jax_model(kwargs):
    model = hvae.HVAE(**kwargs)
    assert torch_count(kwargs) == hvae.param_count(model) == hvae.count_params(**kwargs)


def test_parameter_count_of_vdvae_cifar10_equals_the_jax_model():
    kwargs = hvae.vdvae_cifar10()
    assert torch_count(kwargs) == hvae.count_params(**kwargs) == 39_145_700


def random_params(model, x, seed=1):
    """Parameters of the JAX model's tree, none zero (the prior's last conv is zero at init):
    kernels uniform in +-1/sqrt(fan_in), gains 1 + 0.1 N(0, 1), biases 0.1 N(0, 1). From the
    initialiser's shapes (traced, nothing compiled)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, key=jax.random.key(0)))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            fan_in = math.prod(s.shape[:-1])
            return rng.uniform(-1, 1, s.shape).astype(np.float32) / np.float32(math.sqrt(fan_in))
        return (float(name.endswith("['gain']")) + 0.1 * rng.normal(size=s.shape)).astype(
            np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes["params"])


@pytest.mark.parametrize("kwargs", [OTHER, THREE], ids=["other", "three"])
def test_forward_equals_the_jax_model_with_copied_weights_and_noise(kwargs):
    model = hvae.HVAE(**kwargs)
    s, c, n = kwargs["image_size"], kwargs["channels"], 3
    x = images(n, s, c)
    key = jax.random.key(7)
    params = random_params(model, x)

    @jax.jit
    def jax_pass(params):
        out, kls = model.apply({"params": params}, x, key=key)
        terms = hvae.elbo_terms(out, x, kls)
        # The model draws group g's noise from fold_in(key, g) (one key for the batch).
        eps = [jax.random.normal(jax.random.fold_in(key, g), (n, *shape))
               for g, shape in enumerate(model.latent_shapes())]
        return out, kls, terms["distortion"], hvae.loss_per_dim(terms, x[0].size), eps

    out, kls, distortion, loss, eps = jax.device_get(jax_pass(params))
    tmodel = peer.build(**kwargs)
    tmodel.load_state_dict(peer.from_jax_params(params), strict=True)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    epst = [torch.from_numpy(e.transpose(0, 3, 1, 2).copy()) for e in eps]
    with torch.no_grad():
        tloss, tdist, tkls = peer.loss_per_dim(tmodel, xt, epst)
        tout, _ = tmodel(xt, epst)

    np.testing.assert_allclose(tout.permute(0, 2, 3, 1).numpy(), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tkls.numpy(), kls, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tdist.numpy(), distortion, rtol=1e-5)
    np.testing.assert_allclose(float(tloss), float(loss), rtol=1e-5)
    assert np.all(kls > 0.01)  # the random posteriors differ from the priors


def test_dmol_equals_genart_dmol_at_every_value():
    from genart_jax import dmol

    rng = np.random.default_rng(3)
    params = rng.normal(size=(2, 16, 16, dmol.num_params(3, 4))).astype(np.float32)
    params[..., 4 + 12:4 + 24] -= 3.0  # narrow logistics: bins far in the tails too
    x = rng.integers(0, 256, size=(2, 16, 16, 3)).astype(np.uint8)
    x[0, 0, :4] = [[0, 0, 0], [255, 255, 255], [0, 255, 128], [1, 254, 0]]  # the edge bins
    want = np.asarray(dmol.log_likelihood(params, x))
    got = peer.dmol_log_likelihood(torch.from_numpy(params.transpose(0, 3, 1, 2).copy()),
                                   torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_train_step_lowers_the_loss_skips_and_keeps_an_ema():
    step = peer.make_step(batch=4, lr=2e-3, warmup_iters=1, ema_rate=0.5, **TINY)
    model, x = step.model, step.x
    eps = [torch.randn(4, *s, generator=torch.Generator().manual_seed(g))
           for g, s in enumerate(model.latent_shapes())]
    with torch.no_grad():
        before = float(peer.loss_per_dim(model, x, eps)[0])
    ema_before = [p.clone() for p in step.ema.parameters()]
    for _ in range(3):
        loss, norm, skipped = step()
        assert np.isfinite(float(loss)) and np.isfinite(norm) and not skipped
    with torch.no_grad():
        after = float(peer.loss_per_dim(model, x, eps)[0])
    assert after < before
    assert step.counts["skipped_updates"] == 0
    moved = [not torch.equal(a, b) for a, b in zip(ema_before, step.ema.parameters(),
                                                   strict=True)]
    assert any(moved)

    skipper = peer.make_step(batch=2, skip_threshold=1e-6, ema_rate=None, **TINY)
    kept = [p.clone() for p in skipper.model.parameters()]
    _, _, skipped = skipper()
    assert skipped and skipper.counts["skipped_updates"] == 1
    assert all(torch.equal(a, b) for a, b in zip(kept, skipper.model.parameters(), strict=True))


def test_bfloat16_step_keeps_the_likelihood_in_float32():
    step = peer.make_step(batch=2, dtype="bfloat16", **OTHER)
    loss, norm, skipped = step()
    assert loss.dtype == torch.float32 and np.isfinite(float(loss)) and np.isfinite(norm)
    from genart_jax.bench.peers.timing import autocast

    with torch.no_grad(), autocast("bfloat16"):
        out, kls = step.model(step.x)
    assert out.dtype == kls.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in step.model.parameters())


def test_timed_by_the_bench_like_the_other_peers():
    from genart_jax.bench.interleave import Timed, time_interleaved

    timed = Timed("peer", peer.make_step(batch=2, **TINY))
    time_interleaved([timed], steps=2, rounds=1, pause_s=0)
    t = timed.summary()
    assert t["steps_timed"] == 2 and np.isfinite(t["step_s_median"]) and t["step_s_median"] > 0


def test_latent_shapes_match_the_jax_model():
    model = hvae.HVAE(**OTHER)
    with torch.device("meta"):
        tmodel = peer.build(**OTHER)
    assert [(r, r, z) for z, r, _ in tmodel.latent_shapes()] == list(model.latent_shapes())
    assert jnp.zeros(()).dtype == jnp.float32  # x64 off: the equality test is float32
