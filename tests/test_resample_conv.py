"""The k4/s2 convolution pair (`resample_conv`): every implementation of each pass against a
float64 NumPy definition, and both layers' custom VJPs against autodiff of XLA's convolution, to
first and second order (R1/R2)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax.models import resample_conv as rc
from tests.test_models import transposed_conv_reference


def strided_conv_reference(b, w):
    """float64 definition: s[i, j] = sum_{kh, kw} b[2i + kh - 1, 2j + kw - 1] w[kh, kw]."""
    n, h2, w2, _ = b.shape
    p = np.zeros((n, h2 + 2, w2 + 2, b.shape[-1]))
    p[:, 1:-1, 1:-1] = b
    out = np.zeros((n, h2 // 2, w2 // 2, w.shape[-1]))
    for i in range(h2 // 2):
        for j in range(w2 // 2):
            for kh in range(4):
                for kw in range(4):
                    out[:, i, j] += p[:, 2 * i + kh, 2 * j + kw] @ w[kh, kw]
    return out


# Small maps of 2x3 (<= 16 pixels: the four-phase, im2col and taps branches on CPU) and 5x4 (the
# s2d, matmul and shifted branches).
SHAPES = [(2, 3), (5, 4)]


def _arrays(h, wd, cb=3, cs=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, 2 * h, 2 * wd, cb)), rng.normal(size=(2, h, wd, cs)),
            rng.normal(size=(4, 4, cb, cs)))


@pytest.mark.parametrize("h,wd", SHAPES)
def test_every_down_implementation_is_the_strided_convolution(h, wd):
    b, _, w = _arrays(h, wd)
    want = strided_conv_reference(b, w)
    for f in (rc.down_xla, rc.down_s2d, rc.down_matmul, rc.down_im2col, rc.down):
        got = jax.jit(f)(jnp.float32(b), jnp.float32(w))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=f.__name__)


@pytest.mark.parametrize("h,wd", SHAPES)
def test_every_up_implementation_is_the_transposed_convolution(h, wd):
    _, s, w = _arrays(h, wd)
    # up(s, w) with w (4, 4, Cb, Cs) is ConvTranspose with kernel (4, 4, Cs, Cb).
    want = transposed_conv_reference(s, np.swapaxes(w, 2, 3))
    for f in (rc.up_xla, rc.up_s2d, rc.up_four_phase, rc.up_matmul, rc.up):
        got = jax.jit(f)(jnp.float32(s), jnp.float32(w))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=f.__name__)


@pytest.mark.parametrize("h,wd", SHAPES)
def test_every_kernel_gradient_is_the_adjoint_in_w(h, wd):
    b, s, _ = _arrays(h, wd)
    # <down(b, w), s> = sum_{i, k} b[2i + k - 1] w[k] s[i], so its gradient in w[kh, kw] is
    # sum_i b[2i + kh - 1]^T s[i]; build it from the float64 reference by linearity.
    want = np.zeros((4, 4, 3, 5))
    for kh in range(4):
        for kw in range(4):
            for ci in range(3):
                e = np.zeros((4, 4, 3, 1))
                e[kh, kw, ci, 0] = 1.0
                want[kh, kw, ci] = np.einsum("nhw,nhwd->d", strided_conv_reference(b, e)[..., 0], s)
    for f in (rc.kernel_grad_xla, rc.kernel_grad_taps, rc.kernel_grad_shifted, rc.kernel_grad):
        got = jax.jit(f)(jnp.float32(b), jnp.float32(s))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=f.__name__)


@pytest.mark.parametrize("h,wd", SHAPES)
@pytest.mark.parametrize("min_flops", [0, 1e9])  # 0: the CPU forms even at these tiny sizes
def test_layer_vjps_match_autodiff_of_xla_convolutions(h, wd, min_flops, monkeypatch):
    monkeypatch.setattr(rc, "CPU_FORMS_MIN_FLOPS", min_flops)
    b, s, w = (jnp.float32(a) for a in _arrays(h, wd, seed=1))
    # Downsampling layer: input b, kernel w, output cotangent s.
    got = jax.vjp(rc.downsample_conv, b, w)[1](s)
    want = jax.vjp(rc.down_xla, b, w)[1](s)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    # Upsampling layer: input s, kernel (4, 4, Cs, Cb), output cotangent b.
    wt = jnp.swapaxes(w, 2, 3)
    got = jax.vjp(rc.upsample_conv, s, wt)[1](b)
    want = jax.vjp(lambda s_, w_: rc.up_xla(s_, jnp.swapaxes(w_, 2, 3)), s, wt)[1](b)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("min_flops", [0, 1e12])  # 1e12: XLA's bfloat16 convolutions
def test_layers_keep_bfloat16(min_flops, monkeypatch):
    monkeypatch.setattr(rc, "CPU_MATMUL_FORMS_MIN_FLOPS", min_flops)
    b, s, w = (jnp.asarray(a, jnp.bfloat16) for a in _arrays(5, 4))
    y, vjp = jax.vjp(rc.downsample_conv, b, w)
    grads = vjp(s)
    assert y.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    f32 = [a.astype(jnp.float32) for a in (b, w)]
    ref, ref_vjp = jax.vjp(rc.down_xla, *f32)
    np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=0.05, atol=0.3)
    for g, e in zip(grads, ref_vjp(s.astype(jnp.float32)), strict=True):
        np.testing.assert_allclose(g.astype(jnp.float32), e, rtol=0.05, atol=0.3)
    y, vjp = jax.vjp(rc.upsample_conv, s, jnp.swapaxes(w, 2, 3))
    assert y.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in vjp(b))
    np.testing.assert_allclose(y.astype(jnp.float32), rc.up_xla(s.astype(jnp.float32), f32[1]),
                               rtol=0.05, atol=0.3)


@pytest.mark.parametrize("h,wd", SHAPES)
def test_bfloat16_matmul_forms_round_once_from_float32_accumulation(h, wd):
    # The matmul forms multiply bfloat16 inputs exactly and accumulate in float32, so their
    # outputs are the float64 result of the rounded inputs, rounded once to bfloat16: within
    # half a bfloat16 ulp (at most 2^-8 relative) plus float32 accumulation error. XLA's bfloat16
    # convolution, the forms they replace, is checked only to 0.05 (test_layers_keep_bfloat16).
    b, s, w = (jnp.asarray(a, jnp.bfloat16) for a in _arrays(h, wd, cb=8, cs=16, seed=2))
    assert rc.up_form(s.shape, 8, jnp.bfloat16) == "matmul"
    assert rc.down_form(s.shape, 8, jnp.bfloat16) == ("im2col" if h * wd <= 16 else "matmul")
    b64, s64, w64 = (np.asarray(a, np.float64) for a in (b, s, w))
    down_want = strided_conv_reference(b64, w64)
    up_want = transposed_conv_reference(s64, np.swapaxes(w64, 2, 3))
    for got, want in ((jax.jit(rc.down)(b, w), down_want), (jax.jit(rc.up)(s, w), up_want)):
        assert got.dtype == jnp.bfloat16
        err = np.abs(np.asarray(got, np.float64) - want)
        assert np.all(err <= 2.0**-8 * np.abs(want) + 1e-5 * np.abs(want).max())


def test_cpu_forms_only_for_passes_of_a_gflop():
    # bench_dcgan32's middle layers (2.1 GFLOP per pass) and the default run's (0.27 GFLOP).
    assert rc.up_form((128, 8, 8, 128), 64) == "space_to_depth"
    assert rc.up_form((128, 4, 4, 256), 128) == "four_phase"
    assert rc.kernel_grad_form((128, 8, 8, 128), 64) == "shifted"
    assert rc.kernel_grad_form((128, 4, 4, 256), 128) == "taps"
    assert rc.down_form((128, 8, 8, 128), 64) == "xla"
    assert rc.up_form((64, 8, 8, 64), 32) == rc.kernel_grad_form((64, 8, 8, 64), 32) == "xla"
    # bfloat16: the matmul forms at every size (CPU_MATMUL_FORMS_MIN_FLOPS is 0).
    bf16 = jnp.bfloat16
    for shape, cb in (((128, 8, 8, 128), 64), ((128, 4, 4, 256), 128), ((64, 8, 8, 64), 32)):
        assert rc.up_form(shape, cb, bf16) == "matmul"
        assert rc.kernel_grad_form(shape, cb, bf16) == "taps"
    assert rc.down_form((128, 8, 8, 128), 64, bf16) == "matmul"
    assert rc.down_form((128, 4, 4, 256), 128, bf16) == "im2col"  # no padding FLOPs
    assert rc.up_form((128, 8, 8, 128), 64, forms="xla") == "xla"
    assert rc.down_form((128, 8, 8, 128), 64, bf16, forms="xla") \
        == rc.up_form((128, 8, 8, 128), 64, bf16, forms="xla") == "xla"
    with pytest.raises(ValueError, match="choose one of"):
        rc.up_form((128, 8, 8, 128), 64, forms="cpu")


def test_xla_forms_are_a_parameter_of_each_call():
    # Abstract shapes of a 2.1 GFLOP pass (tracing computes nothing).
    s = jax.ShapeDtypeStruct((128, 8, 8, 128), jnp.float32)
    w = jax.ShapeDtypeStruct((4, 4, 64, 128), jnp.float32)

    def dilated(forms):  # XLA's own up is a convolution with a dilated input
        # The CPU lowering keeps only the CPU branch of `lax.platform_dependent`.
        text = jax.jit(lambda a, b: rc.up(a, b, forms)).lower(s, w).as_text()
        return "lhs_dilate = [2, 2]" in text

    assert not dilated("auto")  # the CPU forms (tests run on CPU)
    assert dilated("xla")
    assert not dilated("auto")  # nothing global changed
    # The layers: the downsampling layer's input gradient is `up`, in the form of `forms`.
    b = jax.ShapeDtypeStruct((128, 16, 16, 64), jnp.float32)

    def vjp_dilated(forms):
        def input_grad(x, k, ct):
            return jax.vjp(functools.partial(rc.downsample_conv, forms=forms), x, k)[1](ct)[0]
        return "lhs_dilate = [2, 2]" in jax.jit(input_grad).lower(b, w, s).as_text()

    assert not vjp_dilated("auto") and vjp_dilated("xla")
    with pytest.raises(ValueError, match="choose one of"):
        rc.downsample_conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((4, 4, 1, 1)), "cpu")


# --- second derivatives: R1/R2 differentiate the layers' backward passes ----------------------

def _up_layer_xla(x, w):
    """The upsampling layer as XLA's convolution, for JAX's autodiff."""
    return rc.up_xla(x, jnp.swapaxes(w, 2, 3))


def _penalty_grads(layer):
    """d/d(w, x) of ||d/dx sum(tanh(layer(x, w))^2)||^2 + <d/dw ..., v>: a penalty on both first
    derivatives (the input gradient, as R1, and the kernel gradient), differentiated again."""
    def penalty(w, x, v):
        gw, gx = jax.grad(lambda w_, x_: jnp.sum(jnp.tanh(layer(x_, w_)) ** 2),
                          argnums=(0, 1))(w, x)
        return jnp.sum(gx ** 2) + jnp.vdot(gw, v)
    return jax.jit(jax.grad(penalty, argnums=(0, 1)))


@pytest.mark.parametrize("h,wd", SHAPES)
@pytest.mark.parametrize("min_flops", [0, 1e9])  # 0: the CPU forms even at these tiny sizes
def test_second_derivatives_of_the_layers_are_those_of_xla_convolutions(h, wd, min_flops,
                                                                        monkeypatch):
    monkeypatch.setattr(rc, "CPU_FORMS_MIN_FLOPS", min_flops)
    with jax.enable_x64(True):
        b, s, w = (jnp.asarray(a, jnp.float64) for a in _arrays(h, wd, seed=3))
        v = jnp.asarray(np.random.default_rng(4).normal(size=w.shape), jnp.float64)
        if min_flops == 0:  # the stride-1 forms, which these tests are about
            assert rc.up_form(s.shape, 3, jnp.float64) != "xla"
            assert rc.kernel_grad_form(s.shape, 3, jnp.float64) != "xla"
        cases = ((rc.downsample_conv, rc.down_xla, w, b, v),
                 (rc.upsample_conv, _up_layer_xla, jnp.swapaxes(w, 2, 3), s,
                  jnp.swapaxes(v, 2, 3)))
        for layer, reference, kernel, x, direction in cases:
            want = _penalty_grads(reference)(kernel, x, direction)  # JAX's autodiff of XLA's
            for forms in rc.FORMS:
                got = _penalty_grads(functools.partial(layer, forms=forms))(kernel, x, direction)
                for g, e in zip(got, want, strict=True):
                    assert g.dtype == jnp.float64
                    np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10 * np.abs(e).max(),
                                               err_msg=f"{layer.__name__} {forms}")


@pytest.mark.parametrize("h,wd", SHAPES)
def test_second_derivatives_of_every_form(h, wd):
    """Each implementation of each pass, differentiated twice (as R1 through the custom VJPs
    does), against XLA's form in float64: the forms are the same linear maps, so all their
    derivatives agree."""
    with jax.enable_x64(True):
        b, s, w = (jnp.asarray(a, jnp.float64) for a in _arrays(h, wd, seed=5))

        def second(f, x, y):
            def inner(x_, y_):
                g = jax.grad(lambda p, q: jnp.sum(jnp.tanh(f(p, q)) ** 2), argnums=(0, 1))(x_, y_)
                return jnp.sum(g[0] ** 2) + jnp.sum(g[1] ** 2)
            return jax.jit(jax.grad(inner, argnums=(0, 1)))(x, y)

        families = ((rc.DOWN_FORMS, b, w), (rc.UP_FORMS, s, w), (rc.KERNEL_GRAD_FORMS, b, s))
        for forms, x, y in families:
            want = second(forms["xla"], x, y)
            for name, f in forms.items():
                for g, e in zip(second(f, x, y), want, strict=True):
                    np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10 * np.abs(e).max(),
                                               err_msg=name)


def test_second_derivatives_in_bfloat16_follow_float32():
    """The bfloat16 matmul forms, differentiated twice through the custom VJPs, against XLA's
    convolutions in float32 on the same rounded inputs: within bfloat16 rounding."""
    b, s, w = (jnp.asarray(a, jnp.bfloat16) for a in _arrays(5, 4, cb=8, cs=16, seed=6))
    assert rc.up_form(s.shape, 8, jnp.bfloat16) == "matmul"
    v = jnp.asarray(np.random.default_rng(7).normal(size=w.shape), jnp.bfloat16)
    f32 = [a.astype(jnp.float32) for a in (w, b, v)]
    got = _penalty_grads(rc.downsample_conv)(w, b, v)
    want = _penalty_grads(rc.down_xla)(*f32)
    for g, e in zip(got, want, strict=True):
        assert g.dtype == jnp.bfloat16
        err = np.linalg.norm(np.asarray(g, np.float32) - e) / np.linalg.norm(e)
        assert err < 0.05, err
