"""The kernel-4, stride-2, padding-1 convolution (2x downsampling) and its transpose (2x
upsampling), each with a custom VJP whose three passes are picked for speed.

Both layers are built from three linear maps on a pair of shapes: a "big" map b (N, 2H, 2W, Cb)
and a "small" map s (N, H, W, Cs), with one kernel w of shape (4, 4, Cb, Cs):

- `down(b, w)`: the strided convolution, s[i] = sum_k b[2i + k - 1] w[k];
- `up(s, w)`: its transpose in b (PyTorch's ConvTranspose2d(k=4, s=2, p=1));
- `kernel_grad(b, s)`: the gradient in w of <down(b, w), s>.

The downsampling convolution is (down, up for the input gradient, kernel_grad); the upsampling
convolution is (up, down for the input gradient, kernel_grad with the roles swapped). So every
pass of both layers is one of three computations, and each has one implementation per backend:

- On XLA:CPU in float32, for passes of at least `CPU_FORMS_MIN_FLOPS`, XLA's own forms of `up` (a
  dilated-input convolution) and of the kernel gradient (a dilated-kernel convolution) are
  slower than stride-1 forms: by 5-70% (run to run) with freed host memory kept
  (`genart_jax.host_memory`, which the CLI sets), by up to 2.6x for `up` without it (the
  kernel-gradient taps then lose: their copies land on fresh pages). There, `up` is the
  four-phase form (four 2x2 stride-1 convolutions, interleaved) when the small map is at most
  4x4, else the transpose of a 2x2 convolution on the space-to-depth input; and the kernel
  gradient is four matmuls, one per 2x2 tap of the space-to-depth input, on small maps of at
  most 4x4, else one matmul of the space-to-depth input with the cotangent shifted once per
  tap (`kernel_grad_shifted`). Those kernel-gradient forms beat YNNPACK's convolutions, which
  jaxlib 0.10 uses by default; where XLA:CPU runs convolutions with Eigen instead
  (`genart_jax.cpu_convolutions`, which the CLI sets), XLA's own kernel gradient is faster
  than both and is used. Smaller passes keep XLA's forms, which are faster there.
- On XLA:CPU in bfloat16, every pass of any size is matmuls accumulated in float32: `down` is
  one matmul (`down_matmul`; `down_im2col` for small maps of at most 4x4), `up` one matmul
  (`up_matmul`) and the kernel gradient the four taps. XLA:CPU runs such matmuls on the bfloat16
  dot-product instructions where the CPU has them, at twice its float32 rate, but its bfloat16
  convolutions at the float32 rate or below.
- Elsewhere (GPU, TPU) every pass is XLA's own convolution, which cuDNN and the TPU compiler
  implement directly.

The platform is chosen when the program is lowered, not when it is traced: a pass whose CPU form
differs from XLA's is `lax.platform_dependent(cpu=<the CPU form>, default=<XLA's>)`, so a step
exported or lowered for cuda or tpu from a CPU process carries XLA's convolutions only
(tests/test_export.py). The `*_form` functions name the CPU form.

`benchmarks/conv_passes.py` times every form per layer (`--dtype bfloat16` too) and
`benchmarks/conv_forms.py` whole steps; README.md ("Benchmarks") has the numbers.

All implementations compute the same linear maps; tests check them against XLA's convolution
and its autodiff, to second order too: each layer's backward pass is built from the same maps in
plain JAX operations (every CPU form included), so JAX differentiates it again exactly as it
would XLA's convolution, and R1/R2 through the layers are right.

The choice is a parameter: `forms="auto"` (each pass picked as above) or `forms="xla"` (XLA's
own form of every pass, on every platform).
DCGAN's and the conv VAE's modules take it as `conv_forms`, from the config's `model.conv_forms`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from genart_jax import cpu_convolutions

_DN = ("NHWC", "HWIO", "NHWC")


# The choices of forms, a parameter of every function below that picks one (`forms`) and of
# DCGAN's and the conv VAE's modules (`conv_forms`, from the config's `model.conv_forms`):
# "auto": each pass in the form picked for its platform, size and dtype (the CPU forms on
#   XLA:CPU where they are faster; XLA's own elsewhere);
# "xla": XLA's own form of every pass on every platform: for counting a model's FLOPs without
#   the CPU forms' extra work (the space-to-depth forms also multiply the zero padding: 8% more
#   FLOPs on the DCGAN-32 train step).
FORMS = ("auto", "xla")


def check_forms(forms: str) -> str:
    """`forms` if it is one of `FORMS`, else ValueError."""
    if forms not in FORMS:
        raise ValueError(f"convolution forms {forms!r}; choose one of {FORMS}")
    return forms


def _accumulation(dtype) -> jnp.dtype:
    """The dtype the matmul forms accumulate in: float32 for bfloat16 and float32 inputs, the
    input's own for float64 (tests), so a float64 pass is a float64 computation."""
    return jnp.promote_types(dtype, jnp.float32)


# --- XLA's own forms (the reference semantics) ------------------------------------------------

def down_xla(b: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """s[i] = sum_k b[2i + k - 1] w[k]: XLA's strided convolution."""
    return lax.conv_general_dilated(b, w, window_strides=(2, 2), padding=((1, 1), (1, 1)),
                                    dimension_numbers=_DN)


def _big_like(s: jnp.ndarray, w: jnp.ndarray) -> jax.ShapeDtypeStruct:
    n, h, wd, _ = s.shape
    return jax.ShapeDtypeStruct((n, 2 * h, 2 * wd, w.shape[2]), s.dtype)


def up_xla(s: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """The transpose of `down_xla` in b (XLA's dilated-input convolution)."""
    (b,) = jax.linear_transpose(lambda b_: down_xla(b_, w), _big_like(s, w))(s)
    return b


def kernel_grad_xla(b: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """d<down(b, w), s>/dw (XLA's dilated-kernel convolution); shape (4, 4, Cb, Cs)."""
    w = jax.ShapeDtypeStruct((4, 4, b.shape[-1], s.shape[-1]), b.dtype)
    (g,) = jax.linear_transpose(lambda w_: down_xla(b, w_), w)(s)
    return g


# --- stride-1 forms, fast on XLA:CPU ----------------------------------------------------------

def space_to_depth(b: jnp.ndarray) -> jnp.ndarray:
    """Pad by 1, then fold 2x2 blocks into channels: (N, 2H, 2W, C) -> (N, H+1, W+1, 4C), with
    channel index (row parity, column parity, c)."""
    p = jnp.pad(b, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h2, w2, c = p.shape
    p = p.reshape(n, h2 // 2, 2, w2 // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return p.reshape(n, h2 // 2, w2 // 2, 4 * c)


def _swap_tap_parity(w: jnp.ndarray, cb: int, cs: int, shape: tuple[int, ...]) -> jnp.ndarray:
    """Regroup kernel taps between (4, 4, Cb, Cs) and (2, 2, 4 Cb, Cs), in either direction
    (the axis swap is its own inverse): W2[r, c, (pr, pc, ci)] = w[2r + pr, 2c + pc, ci]."""
    return w.reshape(2, 2, 2, 2, cb, cs).transpose(0, 2, 1, 3, 4, 5).reshape(shape)


def _kernel_2x2(w: jnp.ndarray) -> jnp.ndarray:
    """(4, 4, Cb, Cs) -> (2, 2, 4 Cb, Cs)."""
    cb, cs = w.shape[2:]
    return _swap_tap_parity(w, cb, cs, (2, 2, 4 * cb, cs))


def _kernel_4x4(w2: jnp.ndarray) -> jnp.ndarray:
    """(2, 2, 4 Cb, Cs) -> (4, 4, Cb, Cs), the inverse of `_kernel_2x2`."""
    cb, cs = w2.shape[2] // 4, w2.shape[3]
    return _swap_tap_parity(w2, cb, cs, (4, 4, cb, cs))


def down_s2d(b: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """`down` as a 2x2 stride-1 valid convolution of the space-to-depth input."""
    return lax.conv_general_dilated(space_to_depth(b), _kernel_2x2(w), window_strides=(1, 1),
                                    padding="VALID", dimension_numbers=_DN)


def up_s2d(s: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """`up` as the transpose of `down_s2d`: a 2x2 stride-1 convolution, then depth-to-space."""
    (b,) = jax.linear_transpose(lambda b_: down_s2d(b_, w), _big_like(s, w))(s)
    return b


def up_four_phase(s: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """`up` as four 2x2 stride-1 convolutions: big pixel (2m + a, 2n + b) correlates s at rows
    (m - 1 + a, m + a) and columns (n - 1 + b, n + b) with the taps w[3-a::-2, 3-b::-2]."""
    wt = jnp.swapaxes(w, 2, 3)  # (4, 4, Cs, Cb): the transposed convolution's kernel
    rows = []
    for a in (0, 1):
        cols = []
        for c in (0, 1):
            cols.append(lax.conv_general_dilated(
                s, wt[3 - a::-2, 3 - c::-2], window_strides=(1, 1),
                padding=((1 - a, a), (1 - c, c)), dimension_numbers=_DN))
        rows.append(jnp.stack(cols, axis=3))  # (N, H, W, 2[c], Cb)
    y = jnp.stack(rows, axis=2)  # (N, H, 2[a], W, 2[c], Cb)
    n, h, _, wd, _, cb = y.shape
    return y.reshape(n, 2 * h, 2 * wd, cb)


def _onto_grid(x: jnp.ndarray, r: int, c: int, row_axis: int) -> jnp.ndarray:
    """Map x (H, W on `row_axis`, `row_axis` + 1) onto the (H+1, W+1) space-to-depth grid at
    tap (r, c)'s shift: zero rows r above and 1 - r below, zero columns c left and 1 - c right.
    Slicing [r:r + H, c:c + W] undoes it."""
    pad = [(0, 0)] * x.ndim
    pad[row_axis], pad[row_axis + 1] = (r, 1 - r), (c, 1 - c)
    return jnp.pad(x, pad)


def kernel_grad_taps(b: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """The kernel gradient as four matmuls, one per tap of the 2x2 space-to-depth kernel,
    accumulated in float32."""
    x = space_to_depth(b)
    h, wd = s.shape[1:3]
    taps = [[jnp.einsum("nhwc,nhwd->cd", x[:, r:r + h, c:c + wd], s,
                        preferred_element_type=_accumulation(b.dtype)) for c in (0, 1)]
            for r in (0, 1)]
    return _kernel_4x4(jnp.array(taps)).astype(b.dtype)


def kernel_grad_shifted(b: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """The kernel gradient as one matmul over the whole space-to-depth grid: s, transposed to
    (Cs, N, H, W) and zero-padded onto the (H+1, W+1) grid once per 2x2 tap at that tap's
    shift, (4 Cs, N(H+1)(W+1)) x (N(H+1)(W+1), 4 Cb) accumulated in float32. It multiplies the
    padding too, (H+1)(W+1)/HW more FLOPs, but copies only s, never the larger input. The
    optimization barriers keep the transposes where they are: XLA would fold them into the
    matmul's dimension numbers, and XLA:CPU runs a matmul that contracts its left operand's
    leading dimension by first transposing that operand (a one-off timing: `a.T @ b` at 86
    against 204 GFLOP/s for a pre-transposed `a`)."""
    x = space_to_depth(b)
    cs, cb = s.shape[-1], b.shape[-1]
    st = lax.optimization_barrier(jnp.moveaxis(s, 3, 0))
    shifted = jnp.stack([_onto_grid(st, r, c, row_axis=2)
                         for r in (0, 1) for c in (0, 1)]).reshape(4 * cs, -1)
    g = lax.optimization_barrier(jnp.dot(shifted, x.reshape(-1, 4 * cb),
                                         preferred_element_type=_accumulation(b.dtype)))
    g = g.reshape(2, 2, cs, 4 * cb).transpose(0, 1, 3, 2)  # (r, c, (pr, pc, Cb), Cs)
    return _kernel_4x4(g).astype(b.dtype)


# --- matmul forms with float32 accumulation, for bfloat16 on XLA:CPU ---------------------------
# XLA:CPU runs a bfloat16 matmul accumulated in float32 on the bfloat16 dot-product instructions
# of CPUs that have them (AVX512-BF16: about 380 GFLOP/s on this project's 2 cores, twice
# float32), but its bfloat16 convolutions at float32 speed or below. These forms put each pass's
# work into one such matmul; the shifts of the 2x2 stride-1 form move to cheap elementwise sums.

def _kernel_matrix(w: jnp.ndarray) -> jnp.ndarray:
    """(4, 4, Cb, Cs) -> (4 Cb, 4 Cs): rows (row parity, column parity, Cb) as in
    `space_to_depth`, columns (r, c, Cs) for the taps of the 2x2 stride-1 kernel."""
    cb, cs = w.shape[2:]
    return _kernel_2x2(w).transpose(2, 0, 1, 3).reshape(4 * cb, 4 * cs)


def depth_to_space(x: jnp.ndarray, channels: int) -> jnp.ndarray:
    """The inverse of `space_to_depth`: (N, H+1, W+1, 4C) -> (N, 2H, 2W, C), padding dropped."""
    n, h1, w1, _ = x.shape
    y = x.reshape(n, h1, w1, 2, 2, channels).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h1, 2 * w1, channels)[:, 1:-1, 1:-1]


def down_matmul(b: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """`down` as one matmul: every space-to-depth pixel times every tap's kernel, (N(H+1)(W+1),
    4 Cb) x (4 Cb, 4 Cs) accumulated in float32, then s[i, j] = sum over taps (r, c) of the
    product at pixel (i + r, j + c). It multiplies the padding too: (H+1)(W+1)/HW more FLOPs."""
    x = space_to_depth(b)
    n, h1, w1, c4 = x.shape
    cs = w.shape[-1]
    y = jnp.dot(x.reshape(-1, c4), _kernel_matrix(w).astype(x.dtype),
                preferred_element_type=_accumulation(b.dtype)).reshape(n, h1, w1, 2, 2, cs)
    h, wd = h1 - 1, w1 - 1
    s = sum(y[:, r:r + h, c:c + wd, r, c] for r in (0, 1) for c in (0, 1))
    return s.astype(b.dtype)


def down_im2col(b: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """`down` as one matmul of the 16 taps' strided slices, side by side: (NHW, 16 Cb) x
    (16 Cb, Cs) accumulated in float32. It copies the input 4 times over, but has none of
    `down_matmul`'s extra FLOPs, 56% or more on maps of at most 4x4."""
    n, h2, w2, cb = b.shape
    h, wd = h2 // 2, w2 // 2
    p = jnp.pad(b, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([p[:, kh:kh + h2:2, kw:kw + w2:2] for kh in range(4)
                               for kw in range(4)], axis=-1).reshape(-1, 16 * cb)
    s = jnp.dot(patches, w.reshape(16 * cb, -1).astype(b.dtype),
                preferred_element_type=_accumulation(b.dtype))
    return s.reshape(n, h, wd, -1).astype(b.dtype)


def up_matmul(s: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """`up` as one matmul: s times every tap's transposed kernel, (NHW, Cs) x (Cs, 16 Cb)
    accumulated in float32, then each tap's product added in at its shift on the space-to-depth
    grid, and depth-to-space. No extra FLOPs."""
    n, h, wd, cs = s.shape
    cb = w.shape[2]
    k = _kernel_matrix(w).reshape(4 * cb, 4, cs).transpose(2, 1, 0).reshape(cs, 16 * cb)
    z = jnp.dot(s.reshape(-1, cs), k.astype(s.dtype),
                preferred_element_type=_accumulation(s.dtype)).reshape(n, h, wd, 2, 2, 4 * cb)
    x = sum(_onto_grid(z[:, :, :, r, c], r, c, row_axis=1) for r in (0, 1) for c in (0, 1))
    return depth_to_space(x, cb).astype(s.dtype)


# --- the per-backend choice and the two layers ------------------------------------------------

# Passes below this many FLOPs keep XLA's own forms on CPU too. Whole float32 steps, interleaved
# (`python -m benchmarks.conv_forms --config NAME`: picked / XLA's forms / stride-1 forms, host
# memory kept, before `kernel_grad_shifted`): dcgan_digits, passes of at most 0.27 GFLOP:
# 1043 / 1040 / 854 img/s; bench_dcgan32, 2.1 GFLOP middle layers: 334 / 328 / 343 img/s.
CPU_FORMS_MIN_FLOPS = 1e9
# bfloat16 passes of at least this many FLOPs take the matmul forms on CPU: all of them. Whole
# steps in bfloat16 (`... --dtype bfloat16`: picked, which is the matmul forms everywhere / XLA's
# forms / the CPU forms everywhere, the same program as picked): dcgan_digits 1458 / 1112 / 1483
# img/s; bench_dcgan32 526 / 306 / 484 img/s (identical programs here differ by up to 14%).
CPU_MATMUL_FORMS_MIN_FLOPS = 0


def pass_flops(small_shape: tuple[int, ...], big_channels: int) -> int:
    """FLOPs of one pass of the pair: 2 * (N H W of the small map) * 16 taps * Cb * Cs."""
    n, h, w, cs = small_shape
    return 2 * n * h * w * 16 * big_channels * cs


def _cpu_forms_for(small_shape: tuple[int, ...], big_channels: int, forms: str) -> bool:
    """Whether a pass of this size takes the stride-1 forms on XLA:CPU: at least
    `CPU_FORMS_MIN_FLOPS`, with `forms` "auto"."""
    return (check_forms(forms) == "auto"
            and pass_flops(small_shape, big_channels) >= CPU_FORMS_MIN_FLOPS)


def _matmul_forms_for(small_shape: tuple[int, ...], big_channels: int, dtype, forms: str
                      ) -> bool:
    """Whether a pass takes the matmul forms on XLA:CPU (`down_matmul` or `down_im2col`,
    `up_matmul`, `kernel_grad_taps`): bfloat16, at least `CPU_MATMUL_FORMS_MIN_FLOPS`, with
    `forms` "auto"."""
    return (jnp.dtype(dtype) == jnp.bfloat16 and check_forms(forms) == "auto"
            and pass_flops(small_shape, big_channels) >= CPU_MATMUL_FORMS_MIN_FLOPS)


def down_form(small_shape: tuple[int, ...], big_channels: int, dtype=jnp.float32,
              forms: str = "auto") -> str:
    """The implementation `down` uses: for bfloat16 passes of at least
    `CPU_MATMUL_FORMS_MIN_FLOPS` on CPU "im2col" with a small map of at most 4x4 and "matmul"
    above; else "xla" (XLA's strided convolution, as fast as any stride-1 form in float32).
    With `forms` "xla", "xla"."""
    if not _matmul_forms_for(small_shape, big_channels, dtype, forms):
        return "xla"
    return "im2col" if small_shape[1] * small_shape[2] <= 16 else "matmul"


def up_form(small_shape: tuple[int, ...], big_channels: int, dtype=jnp.float32,
            forms: str = "auto") -> str:
    """The implementation `up` uses on XLA:CPU for a small map of shape (N, H, W, Cs) and Cb big
    channels: "matmul" in bfloat16 (passes of at least
    `CPU_MATMUL_FORMS_MIN_FLOPS`), and for other passes of at least `CPU_FORMS_MIN_FLOPS`
    "four_phase" with a small map of at most 4x4 and "space_to_depth" above; else "xla".
    With `forms` "xla", "xla"."""
    if _matmul_forms_for(small_shape, big_channels, dtype, forms):
        return "matmul"
    if not _cpu_forms_for(small_shape, big_channels, forms):
        return "xla"
    return "four_phase" if small_shape[1] * small_shape[2] <= 16 else "space_to_depth"


def kernel_grad_form(small_shape: tuple[int, ...], big_channels: int, dtype=jnp.float32,
                     forms: str = "auto") -> str:
    """The implementation `kernel_grad` uses: on CPU "taps" (four matmuls accumulated in
    float32) for bfloat16 passes of at least `CPU_MATMUL_FORMS_MIN_FLOPS`; for other passes of
    at least `CPU_FORMS_MIN_FLOPS`, unless XLA:CPU runs convolutions with Eigen
    (`cpu_convolutions.started_with_eigen()`), "taps" with a small map of at most 4x4 and
    "shifted" above; else "xla" (XLA's own, with Eigen faster than either). With `forms`
    "xla", "xla"."""
    if _matmul_forms_for(small_shape, big_channels, dtype, forms):
        return "taps"
    if (not _cpu_forms_for(small_shape, big_channels, forms)
            or cpu_convolutions.started_with_eigen()):
        return "xla"
    return "taps" if small_shape[1] * small_shape[2] <= 16 else "shifted"


DOWN_FORMS = {"xla": down_xla, "space_to_depth": down_s2d, "matmul": down_matmul,
              "im2col": down_im2col}
UP_FORMS = {"xla": up_xla, "four_phase": up_four_phase, "space_to_depth": up_s2d,
            "matmul": up_matmul}
KERNEL_GRAD_FORMS = {"xla": kernel_grad_xla, "taps": kernel_grad_taps,
                     "shifted": kernel_grad_shifted}


def _small_shape(b: jnp.ndarray, w: jnp.ndarray) -> tuple[int, ...]:
    n, h2, w2, _ = b.shape
    return (n, h2 // 2, w2 // 2, w.shape[-1])


def _per_platform(forms: dict, cpu_form: str, *args: jnp.ndarray) -> jnp.ndarray:
    """forms[cpu_form] where the program is lowered for the CPU, XLA's form elsewhere."""
    if cpu_form == "xla":
        return forms["xla"](*args)
    return lax.platform_dependent(*args, cpu=forms[cpu_form], default=forms["xla"])


def down(b: jnp.ndarray, w: jnp.ndarray, forms: str = "auto") -> jnp.ndarray:
    """The strided convolution, on CPU in the form `down_form` picks."""
    cpu_form = down_form(_small_shape(b, w), b.shape[-1], b.dtype, forms)
    return _per_platform(DOWN_FORMS, cpu_form, b, w)


def up(s: jnp.ndarray, w: jnp.ndarray, forms: str = "auto") -> jnp.ndarray:
    """The transpose of `down` in b, on CPU in the form `up_form` picks."""
    return _per_platform(UP_FORMS, up_form(s.shape, w.shape[2], s.dtype, forms), s, w)


def kernel_grad(b: jnp.ndarray, s: jnp.ndarray, forms: str = "auto") -> jnp.ndarray:
    """d<down(b, w), s>/dw, on CPU in the form `kernel_grad_form` picks."""
    cpu_form = kernel_grad_form(s.shape, b.shape[-1], b.dtype, forms)
    return _per_platform(KERNEL_GRAD_FORMS, cpu_form, b, s)


# The two layers: custom VJPs whose three passes are `down`, `up` and `kernel_grad`, each in the
# form picked for its platform, size and dtype under `forms` ("xla": XLA's own for every pass,
# on every platform). The backward passes are built from the same linear maps with plain JAX
# operations, every CPU form included, so they are differentiable again: R1/R2's second
# derivatives through the layers are those of XLA's convolutions (tests/test_resample_conv.py
# checks them against JAX's autodiff of XLA's convolution, tests/test_r3gan.py against finite
# differences in float64).

def downsample_conv(x: jnp.ndarray, w: jnp.ndarray, forms: str = "auto") -> jnp.ndarray:
    """Convolution with kernel 4, stride 2, padding 1: x (N, 2H, 2W, Cin), w (4, 4, Cin, Cout)
    -> (N, H, W, Cout). `forms`: "auto" (each pass picked per platform) or "xla" (XLA's
    convolutions for every pass)."""
    return _downsample_conv(x, w, check_forms(forms))


def upsample_conv(x: jnp.ndarray, w: jnp.ndarray, forms: str = "auto") -> jnp.ndarray:
    """Transposed convolution with kernel 4, stride 2, padding 1 and PyTorch's scatter
    semantics out[2i + k - 1] += x[i] * w[k]: x (N, H, W, Cin), w (4, 4, Cin, Cout)
    -> (N, 2H, 2W, Cout). `forms` as for `downsample_conv`."""
    return _upsample_conv(x, w, check_forms(forms))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _downsample_conv(x: jnp.ndarray, w: jnp.ndarray, forms: str) -> jnp.ndarray:
    return down(x, w, forms)


def _downsample_fwd(x, w, forms):
    return down(x, w, forms), (x, w)


def _downsample_bwd(forms, res, ct):
    x, w = res
    return up(ct, w, forms).astype(x.dtype), kernel_grad(x, ct, forms).astype(w.dtype)


_downsample_conv.defvjp(_downsample_fwd, _downsample_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _upsample_conv(x: jnp.ndarray, w: jnp.ndarray, forms: str) -> jnp.ndarray:
    return up(x, jnp.swapaxes(w, 2, 3), forms)


def _upsample_fwd(x, w, forms):
    return up(x, jnp.swapaxes(w, 2, 3), forms), (x, w)


def _upsample_bwd(forms, res, ct):
    x, w = res
    dx = down(ct, jnp.swapaxes(w, 2, 3), forms)
    dw = jnp.swapaxes(kernel_grad(ct, x, forms), 2, 3)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_upsample_conv.defvjp(_upsample_fwd, _upsample_bwd)
