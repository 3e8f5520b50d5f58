"""The FID Inception-v3 in Flax: the network of the TF FID code (Heusel et al. 2017) as
pytorch-fid re-implements it (torchvision's Inception-v3 with its FID patches: average pools
that leave the padding out of the count, a max pool in the last block), with pytorch-fid's
bilinear resize to 299x299 and its [-1, 1] input scaling. The 2048-d output of the final
average pool is the feature space of published FIDs.

Inference only: BatchNorm uses its stored statistics, kept as plain params. Param names follow
the PyTorch state dict (`Mixed_5b.branch1x1.conv.weight` -> params['Mixed_5b']['branch1x1']
['conv']['weight'], torch layout converted), so a state dict converted once to .npz or
safetensors by scripts/convert_fid_inception.py loads with `params_from_state_dict`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3  # torchvision's BasicConv2d
PyTree = Any
Pad = tuple[tuple[int, int], tuple[int, int]]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm with stored statistics -> ReLU, as torchvision's
    BasicConv2d in eval mode."""

    out: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kh, kw = _pair(self.kernel)
        ph, pw = _pair(self.padding)
        w = self.param("conv", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.out))
        y = jax.lax.conv_general_dilated(x, w, (self.stride, self.stride),
                                         ((ph, ph), (pw, pw)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        scale = self.param("bn_weight", ones, (self.out,))
        bias = self.param("bn_bias", zeros, (self.out,))
        mean = self.param("bn_mean", zeros, (self.out,))
        var = self.param("bn_var", ones, (self.out,))
        c = (1, 1, 1, self.out)  # explicit ranks: no implicit rank promotion
        mul = (scale / jnp.sqrt(var + BN_EPS)).reshape(c)
        return nn.relu((y - mean.reshape(c)) * mul + bias.reshape(c))


def _avg_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 stride-1 average pool whose edge windows average their in-image pixels only (TF's,
    and pytorch-fid's count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, 1, name="branch1x1")(x)
        b5 = BasicConv(64, 5, padding=2, name="branch5x5_2")(
            BasicConv(48, 1, name="branch5x5_1")(x))
        b3 = BasicConv(64, 1, name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, 3, stride=2, name="branch3x3")(x)
        bd = BasicConv(64, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], -1)


class InceptionC(nn.Module):
    c7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.c7
        b1 = BasicConv(192, 1, name="branch1x1")(x)
        b7 = BasicConv(c7, 1, name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, 1, name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, 1, name="branch3x3_1")(x)
        b3 = BasicConv(320, 3, stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, 1, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], -1)


class InceptionE(nn.Module):
    """`max_pool`: the FID network's last block pools by max where the paper averages."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, 1, name="branch1x1")(x)
        b3 = BasicConv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)],
                             -1)
        bd = BasicConv(448, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
        pooled = (nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1))) if self.max_pool
                  else _avg_pool_3x3(x))
        bp = BasicConv(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


def resize_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) weights of 1-D bilinear resampling with half-pixel centres and no
    antialiasing: torch's F.interpolate(mode='bilinear', align_corners=False), with its
    arithmetic for the source coordinates (a float32 scale, then one fused multiply-add
    rounded to float32), so that the weights match its CPU kernel's to the last bit."""
    f32 = np.float32
    scale = np.float64(f32(f32(in_size) / f32(out_size)))
    src = np.maximum((scale * (np.arange(out_size) + 0.5) - 0.5).astype(f32), f32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = (src - i0.astype(f32)).astype(f32)
    m = np.zeros((out_size, in_size), f32)
    np.add.at(m, (np.arange(out_size), i0), f32(1) - frac)
    np.add.at(m, (np.arange(out_size), i1), frac)
    return m


def resize_bilinear(x: jnp.ndarray, size: int = FID_SIZE) -> jnp.ndarray:
    """(N, H, W, C) -> (N, size, size, C) by pytorch-fid's resize (see `resize_matrix`)."""
    rh = jnp.asarray(resize_matrix(size, x.shape[1]), x.dtype)
    rw = jnp.asarray(resize_matrix(size, x.shape[2]), x.dtype)
    hp = jax.lax.Precision.HIGHEST
    return jnp.einsum("oh,nhwc,pw->nopc", rh, x, rw, precision=hp)


class FIDInceptionV3(nn.Module):
    """Images (N, H, W, C) in [-1, 1] (C = 1 is repeated to RGB) -> (N, 2048) pool features.

    `resize`: resize to 299x299 first, as pytorch-fid does (off only to test the network at
    another size). pytorch-fid takes [0, 1] and maps to [-1, 1] after its resize; resizing is
    affine-invariant, so [-1, 1] input resized here is the same."""

    resize: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if self.resize:
            x = resize_bilinear(x, FID_SIZE)
        x = BasicConv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv(80, 1, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                         ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return x.mean(axis=(1, 2))


# ---------------------------------------------------------------------------------------------
# weights: a PyTorch state dict, converted once to .npz or safetensors (never pickle)

_TORCH_SUFFIX = {"conv.weight": "conv", "bn.weight": "bn_weight", "bn.bias": "bn_bias",
                 "bn.running_mean": "bn_mean", "bn.running_var": "bn_var"}


class WeightsError(ValueError):
    """A weights file that is missing, unsafe, unreadable or not the FID Inception's."""


def params_from_state_dict(state: dict[str, np.ndarray]) -> PyTree:
    """The Flax params of `FIDInceptionV3` from a PyTorch state dict's arrays (torch names;
    conv weights (O, I, kh, kw) -> (kh, kw, I, O)); the classifier head, if present, and
    BatchNorm's num_batches_tracked are dropped."""
    params: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        leaf = _TORCH_SUFFIX.get(".".join(parts[-2:]))
        if leaf is None:
            raise WeightsError(f"unexpected tensor {key!r}: not an FID Inception-v3 state dict")
        arr = np.asarray(value, np.float32)
        if leaf == "conv":
            if arr.ndim != 4:
                raise WeightsError(f"tensor {key!r} has shape {arr.shape}, not a convolution's "
                                   f"(O, I, kh, kw): not an FID Inception-v3 state dict")
            arr = arr.transpose(2, 3, 1, 0)
        node = params
        for p in parts[:-2]:
            node = node.setdefault(p, {})
        node[leaf] = arr
    return params


def state_dict_from_params(params: PyTree) -> dict[str, np.ndarray]:
    """The inverse of `params_from_state_dict` (torch names and layout)."""
    inverse = {v: k for k, v in _TORCH_SUFFIX.items()}
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    out = {}
    for path, value in flat:
        names = [p.key for p in path]
        arr = np.asarray(value, np.float32)
        if names[-1] == "conv":
            arr = arr.transpose(3, 2, 0, 1)
        out[".".join([*names[:-1], inverse[names[-1]]])] = arr
    return out


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file (8-byte little-endian header length, JSON header,
    raw little-endian data), read without the safetensors package."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise WeightsError(f"{path}: tensor {key} has dtype {info['dtype']}; expected "
                               f"one of {', '.join(_SAFETENSORS_DTYPES)}")
        start, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        out[key] = np.frombuffer(data[start:end], dtype).reshape(info["shape"])
    return out


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray]) -> Path:
    """Write float32 arrays as a .safetensors file (the format `read_safetensors` reads)."""
    header, chunks, offset = {}, [], 0
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key], "<f4")
        header[key] = {"dtype": "F32", "shape": list(arr.shape),
                       "data_offsets": [offset, offset + arr.nbytes]}
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path = Path(path)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(chunks))
    return path


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """A state dict's arrays from `path`: .npz (no pickle allowed) or .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file {path}; convert pytorch-fid's "
                           f"pt_inception-2015-12-05-6726825d.pth once with `python "
                           f"scripts/convert_fid_inception.py PTH OUT.npz` where torch is "
                           f"installed")
    try:
        if path.suffix == ".safetensors":
            return read_safetensors(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise WeightsError(f"cannot read weights {path}: {e}") from e
    raise WeightsError(f"weights {path} must be a .npz or .safetensors file (pickled .pth/.pkl "
                       f"files are not loaded: convert them with "
                       f"scripts/convert_fid_inception.py)")


def load_params(path: str | Path) -> PyTree:
    """FID Inception params from a weights file, checked against the architecture's shapes."""
    return checked_params(read_weights(path), str(path))


def checked_params(state: dict[str, np.ndarray], where: str) -> PyTree:
    """`params_from_state_dict(state)`, or a WeightsError naming what does not fit."""
    params = params_from_state_dict(state)
    want = jax.eval_shape(lambda: FIDInceptionV3(resize=False).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))["params"])
    got, exp = _shapes(params), _shapes(want)
    if got != exp:
        diff = sorted(set(got) ^ set(exp)) + sorted(k for k in set(got) & set(exp)
                                                    if got[k] != exp[k])
        raise WeightsError(f"{where} is not the FID Inception-v3's weights (missing, extra or "
                           f"misshapen: {', '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})")
    return params


def _shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(k): tuple(v.shape)
            for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
