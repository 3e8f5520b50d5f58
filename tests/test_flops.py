"""FLOPs counted from the jaxpr (`genart_jax.flops`): closed forms for an MLP and single
convolutions, XLA's cost analysis of the same programs, the platform's branch of
`lax.platform_dependent`, scans, and whole train steps against XLA:CPU."""

import functools

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from genart_jax import flops
from genart_jax.models import resample_conv as rc
from genart_jax.train.programs import step_and_arguments, step_flops
from tests.conftest import tiny_config
from tests.test_r3gan import tiny_r3gan
from tests.test_vae import tiny_vae

DN = ("NHWC", "HWIO", "NHWC")


def xla_flops(fn, *args, **jit_kwargs) -> float:
    """XLA:CPU's cost analysis of `fn` compiled for `args`."""
    cost = jax.jit(fn, **jit_kwargs).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list | tuple) else cost)["flops"]


def test_mlp_forward_and_backward_match_the_closed_form():
    b, i, h, o = 8, 5, 7, 3

    def loss(params, x):
        return jnp.sum(jnp.tanh(x @ params["w1"]) @ params["w2"])

    params = {"w1": jnp.ones((i, h)), "w2": jnp.ones((h, o))}
    x = jnp.ones((b, i))
    # forward 2B(ih + ho); backward dW2 2Bho, dh 2Bho, dW1 2Bih; dx is dead code, not counted
    want = 2 * b * (i * h + h * o) + 4 * b * h * o + 2 * b * i * h
    count = flops.count_fn(jax.value_and_grad(loss), params, x)
    assert count.matmul == want
    # jax.grad alone drops the loss value: the last forward product is dead code then.
    assert flops.count_fn(jax.grad(loss), params, x).matmul == want - 2 * b * h * o
    assert count.transcendental == b * h  # tanh
    assert flops.count_fn(lambda p, x: loss(p, x), params, x).matmul == 2 * b * (i * h + h * o)


@pytest.mark.parametrize("name", ["same3x3", "down", "up", "kernel_grad", "grouped", "dilated"])
def test_one_convolution_matches_the_closed_form_and_xla(name):
    n, hw, cin, cout = 2, 5, 3, 4
    x = jnp.ones((n, hw, hw, cin))
    cases = {  # (function, arguments, closed form)
        # 3x3 "same" on 5 px: per axis 5 * 3 taps minus the 2 that fall on the padding
        "same3x3": (lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                          dimension_numbers=DN),
                    (x, jnp.ones((3, 3, cin, cout))), 2 * n * cout * cin * 13 * 13),
        # k4 s2 p1 on 8 px -> 4: 4 outputs x 4 taps minus 2 on the padding, per axis
        "down": (rc.down_xla, (jnp.ones((n, 8, 8, cin)), jnp.ones((4, 4, cin, cout))),
                 2 * n * cout * cin * 14 * 14),
        # its transpose 4 -> 8 px: every input pixel x 16 taps, less those cropped (2 per axis)
        "up": (rc.up_xla, (jnp.ones((n, 4, 4, cout)), jnp.ones((4, 4, cin, cout))),
               2 * n * cin * cout * 14 * 14),
        "kernel_grad": (rc.kernel_grad_xla, (jnp.ones((n, 8, 8, cin)),
                                             jnp.ones((n, 4, 4, cout))),
                        2 * n * cin * cout * 14 * 14),
        # 2 groups of 2 -> 3 features: each output sums over its own group's 2 inputs
        "grouped": (lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                          dimension_numbers=DN,
                                                          feature_group_count=2),
                    (jnp.ones((n, hw, hw, 4)), jnp.ones((3, 3, 2, 6))),
                    2 * n * 6 * 2 * 13 * 13),
        # kernel dilation 2 (a 5-wide window), valid: 1 output per axis, 3 taps
        "dilated": (lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                                          rhs_dilation=(2, 2),
                                                          dimension_numbers=DN),
                    (x, jnp.ones((3, 3, cin, cout))), 2 * n * cout * cin * 3 * 3),
    }
    fn, args, want = cases[name]
    count = flops.count_fn(fn, *args)
    assert count.matmul == want
    assert count.matmul == xla_flops(fn, *args)


def test_platform_dependent_counts_the_target_platforms_branch():
    def f(a, b):
        return lax.platform_dependent(a, b, cpu=lambda a, b: (a @ b) @ b.T @ b,
                                      default=lambda a, b: a @ b)

    a, b = jnp.ones((4, 6)), jnp.ones((6, 6))
    one = 2 * 4 * 6 * 6
    assert flops.count_fn(f, a, b).matmul == one  # cuda: the default branch
    assert flops.count_fn(f, a, b, platform="tpu").matmul == one
    assert flops.count_fn(f, a, b, platform="cpu").matmul == 3 * one
    # Under differentiation both the forward and the transposed cond keep their platforms.
    grad = jax.value_and_grad(lambda a, b: jnp.sum(f(a, b)), argnums=1)
    assert flops.count_fn(grad, a, b).matmul == 2 * one  # forward + d/db (d/da is dead)
    assert flops.count_fn(grad, a, b, platform="cpu").matmul > 2 * one


def test_scan_counts_its_body_per_iteration_and_a_data_cond_its_larger_branch():
    def scanned(c, xs):
        return lax.scan(lambda c, x: (c @ x, None), c, xs)[0]

    c, xs = jnp.ones((3, 3)), jnp.ones((5, 3, 3))
    assert flops.count_fn(scanned, c, xs).matmul == 5 * 2 * 27

    def branchy(p, a):
        return lax.cond(p, lambda a: a @ a @ a, lambda a: a, a)

    assert flops.count_fn(branchy, True, c).matmul == 2 * 2 * 27

    def loop(a):
        return lax.while_loop(lambda a: a[0, 0] < 10, lambda a: a @ a, a)

    with pytest.raises(flops.FlopCountError, match="while loop"):
        flops.count_fn(loop, c)


def test_fused_steps_count_k_steps_and_both_dtypes_count_the_same():
    cfg = tiny_config("mlp")
    one = step_flops(cfg)
    assert one.matmul > 0
    assert step_flops(cfg, k=3).matmul == pytest.approx(3 * one.matmul)
    bf16 = tiny_config("mlp", **{"model.dtype": "bfloat16"})
    assert step_flops(bf16).matmul == one.matmul  # a FLOP is a FLOP; the peak differs


@functools.cache
def traced_step(config: str):
    """The traced one-device train step of a tiny config ("dcgan", "convvae", "r3gan",
    "r3gan-no-r1r2")."""
    cfg = {"dcgan": lambda: tiny_config("dcgan"), "r3gan": tiny_r3gan,
           "convvae": lambda: tiny_vae(**{"model.arch": "conv", "model.conv_vae.width": "4",
                                          "data.image_size": "16"}),
           "r3gan-no-r1r2": lambda: tiny_r3gan(**{"train.r1_gamma": "0",
                                                  "train.r2_gamma": "0"})}[config]()
    step, args = step_and_arguments(cfg, jax.devices()[0])
    return step.trace(*args)


def counted(config: str, platform: str = "cuda") -> flops.FlopCount:
    return flops.count_jaxpr(flops.without_dead_code(traced_step(config).jaxpr), platform)


def test_r1_and_r2_passes_are_counted():
    # R1 and R2 each add D's input gradient and its second-order backward on one batch.
    assert counted("r3gan").matmul > 1.5 * counted("r3gan-no-r1r2").matmul


@pytest.mark.parametrize("config", ["dcgan", "convvae", "r3gan"])
def test_whole_steps_match_xla_cost_analysis_of_the_same_program(config):
    """The step as lowered for the CPU (its CPU forms included) against XLA's cost analysis of
    that program (XLA's HloCostAnalysis, no compile): matmuls plus elementwise work within 0.2%
    for the GANs; the VAE is 4.3% short, XLA counting the threefry ops of its noise (about 25
    per random 32-bit word, `flops.py`). The dots and convolutions alone are 75-100% of XLA's
    count (the rest: losses, optimizer, activations)."""
    xla = traced_step(config).lower().cost_analysis()["flops"]
    cpu = counted(config, "cpu")
    assert cpu.total == pytest.approx(xla, rel=0.05 if config == "convvae" else 0.002)
    assert 0.75 * xla <= cpu.matmul <= xla
    if config == "r3gan":  # the CPU's dense block-diagonal form of the grouped convolutions
        assert counted(config).matmul < 0.7 * cpu.matmul
