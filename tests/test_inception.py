"""The FID Inception-v3 against pytorch-fid's (torchvision's Inception-v3 with the FID patches)
on the same random weights and inputs, its resize against pytorch-fid's, and its weight files.

The torch comparisons skip where torch, torchvision or pytorch-fid are absent (CI's `.[dev]`
venv); `pip install torchvision==0.29.1 pytorch-fid --no-deps` enables them."""

import subprocess
import sys
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax.models import inception as inc

ROOT = Path(__file__).resolve().parents[1]


def random_params(seed=0):
    """Params of the right names and shapes, in float32, without running the network."""
    abstract = jax.eval_shape(lambda: inc.FIDInceptionV3(resize=False).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), abstract)


def torch_state_dict(seed=1):
    """A random state dict of torchvision's Inception-v3 (FID variant: 1008 classes, no aux),
    BatchNorm statistics and affine terms randomised too so that they are tested."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(seed)
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                          init_weights=True)
    sd = net.state_dict()
    g = torch.Generator().manual_seed(seed)
    for k, v in sd.items():
        if k.endswith("running_mean") or k.endswith("bn.bias"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("running_var") or k.endswith("bn.weight"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
    return sd


def test_resize_matches_pytorch_fids_interpolate():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for h, w in ((32, 32), (17, 40), (512, 300)):  # up, mixed, down (no antialiasing)
        x = rng.uniform(0, 1, (2, 3, h, w)).astype(np.float32)
        # what pytorch_fid.inception.InceptionV3.forward does with resize_input=True
        want = F.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear",
                             align_corners=False).numpy()
        got = np.asarray(inc.resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1))))
        np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, atol=2e-6, rtol=0)


def test_resize_matrix_rows_are_bilinear_weights():
    m = inc.resize_matrix(7, 3)
    np.testing.assert_allclose(m.sum(1), 1.0)
    assert (np.count_nonzero(m, axis=1) <= 2).all()
    np.testing.assert_allclose(inc.resize_matrix(5, 5), np.eye(5))  # same size: identity


@pytest.mark.slow
def test_network_matches_pytorch_fid_inception_on_random_weights():
    torch = pytest.importorskip("torch")
    pfi = pytest.importorskip("pytorch_fid.inception")
    sd = torch_state_dict()
    # pytorch-fid builds torchvision's Inception-v3 with its FID blocks, then loads weights
    # from a URL: hand it the random state dict instead, so nothing is downloaded.
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: sd):
        net = pfi.InceptionV3([pfi.InceptionV3.DEFAULT_BLOCK_INDEX], resize_input=True,
                              normalize_input=True).eval()
    x01 = np.random.default_rng(0).uniform(0, 1, (2, 3, 40, 40)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x01))[0].numpy().reshape(2, -1)
    params = inc.params_from_state_dict({k: v.numpy() for k, v in sd.items()})
    ours = jax.jit(lambda p, x: inc.FIDInceptionV3().apply({"params": p}, x))
    got = np.asarray(ours(params, jnp.asarray(x01.transpose(0, 2, 3, 1) * 2 - 1)))
    assert got.shape == (2, inc.FEATURE_DIM)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, err  # float32 rounding through 94 convolutions
    # and a grey image goes in as its RGB copy
    grey = x01[:, :1].transpose(0, 2, 3, 1) * 2 - 1
    np.testing.assert_allclose(np.asarray(ours(params, jnp.asarray(grey))),
                               np.asarray(ours(params, jnp.asarray(np.repeat(grey, 3, -1)))))


def test_state_dict_round_trip_and_file_formats(tmp_path):
    params = random_params()
    sd = inc.state_dict_from_params(params)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)  # torch (O, I, kh, kw)
    assert sd["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
    back = inc.params_from_state_dict({**sd, "fc.weight": np.zeros((1008, 2048)),
                                       "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros(())})
    jax.tree.map(np.testing.assert_array_equal, back, params)
    np.savez(tmp_path / "w.npz", **sd)
    inc.write_safetensors(tmp_path / "w.safetensors", sd)
    for name in ("w.npz", "w.safetensors"):
        jax.tree.map(np.testing.assert_array_equal, inc.load_params(tmp_path / name), params)


def test_weight_file_errors(tmp_path):
    with pytest.raises(inc.WeightsError, match="convert_fid_inception.py"):
        inc.load_params(tmp_path / "missing.npz")
    (tmp_path / "w.pth").write_bytes(b"\x80\x04pickle")
    with pytest.raises(inc.WeightsError, match="not loaded"):
        inc.load_params(tmp_path / "w.pth")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))  # needs pickle
    with pytest.raises(inc.WeightsError, match="cannot read"):
        inc.load_params(tmp_path / "obj.npz")
    sd = inc.state_dict_from_params(random_params())
    sd.pop("Mixed_5b.branch1x1.conv.weight")
    sd["Mixed_5c.branch_pool.bn.bias"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "short.npz", **sd)
    with pytest.raises(inc.WeightsError, match="not the FID Inception-v3's weights"):
        inc.load_params(tmp_path / "short.npz")
    np.savez(tmp_path / "alien.npz", **{"layer.0.weight": np.zeros((2, 2))})
    with pytest.raises(inc.WeightsError, match="unexpected tensor 'layer.0.weight'"):
        inc.load_params(tmp_path / "alien.npz")


def test_conversion_script_writes_loadable_weights(tmp_path):
    torch = pytest.importorskip("torch")
    sd = torch_state_dict()
    torch.save(sd, tmp_path / "pt_inception.pth")
    for out in ("w.npz", "w.safetensors"):
        proc = subprocess.run([sys.executable, str(ROOT / "scripts/convert_fid_inception.py"),
                               str(tmp_path / "pt_inception.pth"), str(tmp_path / out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        params = inc.load_params(tmp_path / out)
        np.testing.assert_array_equal(params["Mixed_6e"]["branch7x7_2"]["conv"],
                                      sd["Mixed_6e.branch7x7_2.conv.weight"].numpy()
                                      .transpose(2, 3, 1, 0))
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pth")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/convert_fid_inception.py"),
                           str(tmp_path / "other.pth"), str(tmp_path / "x.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not an FID Inception-v3" in proc.stderr
    assert not (tmp_path / "x.npz").exists()
