"""FLOPs of a traced program counted from its jaxpr, not from XLA's cost analysis (which is -1
or undercounted on GPU, jax #16008, #20184, #22249): the model FLOPs that MFU is reported in.

Every `dot_general` and `conv_general_dilated` counts 2 FLOPs per multiply-add, the same
convention as XLA's cost analysis: a convolution counts only the products of real input
elements, not those that fall on its zero padding or between the elements of a dilated
(transposed-convolution) input, and a grouped convolution counts the products within each
group. Elementwise arithmetic and reductions count 1 per element and transcendentals
separately (what XLA's count adds on top of the matmuls). Random bits are not counted: the
jaxpr holds them as one `random_bits` per draw, which XLA counts as the threefry hash's ops
(about 25 per 32-bit word), so the elementwise count falls short of XLA's where a step draws
much noise (4% on a VAE step; 0.05% on the GAN steps).

Control flow: a `scan` counts its body `length` times; `shard_map` its per-device body once per
device of its manual axes (the global count); a `cond` made by `lax.platform_dependent` counts
only the branch the target platform runs (`platform`, default "cuda": on every platform but
the CPU that is XLA's own form, which is what a model's FLOPs are); any other `cond` counts its
most expensive branch (an upper bound, e.g. a lazily regularised step on a penalty step); a
`while` loop's trip count is unknown, and counting one raises `FlopCountError`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex_core

MATMUL = ("dot_general", "conv_general_dilated")
TRANSCENDENTAL = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "pow", "rsqrt", "sqrt", "cbrt", "tanh", "logistic",
    "sin", "cos", "tan", "atan2", "erf", "erfc", "erf_inv", "lgamma", "digamma"})
ELEMENTWISE = frozenset({
    "add", "add_any", "sub", "mul", "div", "rem", "neg", "max", "min", "abs", "sign", "square",
    "integer_pow", "select_n", "clamp", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not",
    "xor", "floor", "ceil", "round", "is_finite", "nextafter", "shift_left",
    "shift_right_logical", "shift_right_arithmetic", "population_count"})
REDUCTION = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                       "reduce_or", "argmax", "argmin", "cumsum", "cummax", "cumprod"})


class FlopCountError(ValueError):
    """A program whose FLOPs cannot be counted from its jaxpr (a loop of unknown length)."""


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of a program: `matmul` (dots and convolutions, 2 per multiply-add; the count MFU
    uses), `elementwise` (arithmetic and reductions, 1 per element) and `transcendental`."""

    matmul: float = 0.0
    elementwise: float = 0.0
    transcendental: float = 0.0

    @property
    def total(self) -> float:
        """Matmul and elementwise FLOPs: what XLA's cost analysis calls "flops"."""
        return self.matmul + self.elementwise

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(self.matmul + other.matmul, self.elementwise + other.elementwise,
                         self.transcendental + other.transcendental)

    def __mul__(self, n: float) -> FlopCount:
        return FlopCount(self.matmul * n, self.elementwise * n, self.transcendental * n)


def dot_general_flops(lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...],
                      dimension_numbers: Any) -> float:
    """2 * (every lhs element) * (the rhs's free, neither contracted nor batch, extent)."""
    (_, rhs_contract), (_, rhs_batch) = dimension_numbers
    free = [d for i, d in enumerate(rhs_shape) if i not in (*rhs_contract, *rhs_batch)]
    return 2.0 * math.prod(lhs_shape) * math.prod(free)


def valid_taps(in_size: int, kernel: int, out_size: int, stride: int, pad_low: int,
               lhs_dilation: int, rhs_dilation: int) -> int:
    """(output position, kernel tap) pairs of one spatial dimension whose input is a real
    element: not padding, not a hole of the dilated input."""
    pos = (np.arange(out_size)[:, None] * stride + np.arange(kernel)[None, :] * rhs_dilation
           - pad_low)
    real = (pos >= 0) & (pos <= (in_size - 1) * lhs_dilation) & (pos % lhs_dilation == 0)
    return int(real.sum())


def conv_flops(lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...],
               out_shape: tuple[int, ...], params: dict[str, Any]) -> float:
    """2 * output batch * output features * kernel input features (per group) * the valid
    taps of every spatial dimension, for `conv_general_dilated`'s `params`."""
    dn = params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    spatial = 1
    for i, (li, ri, oi) in enumerate(zip(lhs_spec[2:], rhs_spec[2:], out_spec[2:],
                                         strict=True)):
        lhs_dil = params["lhs_dilation"][i] if params["lhs_dilation"] else 1
        rhs_dil = params["rhs_dilation"][i] if params["rhs_dilation"] else 1
        spatial *= valid_taps(lhs_shape[li], rhs_shape[ri], out_shape[oi],
                              params["window_strides"][i], params["padding"][i][0], lhs_dil,
                              rhs_dil)
    return (2.0 * out_shape[out_spec[0]] * out_shape[out_spec[1]] * rhs_shape[rhs_spec[1]]
            * spatial)


def _size(var: Any) -> int:
    return math.prod(getattr(var.aval, "shape", ()))


def _jaxpr(x: Any) -> Any:
    """The open jaxpr of a Jaxpr or ClosedJaxpr."""
    return x.jaxpr if isinstance(x, jex_core.ClosedJaxpr) else x


def _branch_for(platforms: tuple, platform: str) -> int:
    """Index of the branch `lax.platform_dependent` lowers for `platform`."""
    for i, names in enumerate(platforms):
        if names is not None and platform in names:
            return i
    return next(i for i, names in enumerate(platforms) if names is None)


def _inner_jaxprs(params: dict[str, Any]) -> list[Any]:
    """Jaxprs among an equation's parameters (pjit, custom_vjp/jvp, remat, closed_call, ...)."""
    found = []
    for v in params.values():
        for u in v if isinstance(v, tuple | list) else (v,):
            if isinstance(u, jex_core.ClosedJaxpr | jex_core.Jaxpr):
                found.append(u)
    return found


def _eqn_flops(eqn: Any, platform: str) -> FlopCount:
    name, p = eqn.primitive.name, eqn.params
    if name == "dot_general":
        shapes = [v.aval.shape for v in eqn.invars]
        return FlopCount(matmul=dot_general_flops(*shapes, p["dimension_numbers"]))
    if name == "conv_general_dilated":
        lhs, rhs = (v.aval.shape for v in eqn.invars)
        return FlopCount(matmul=conv_flops(lhs, rhs, eqn.outvars[0].aval.shape, p))
    if name == "scan":
        return count_jaxpr(p["jaxpr"], platform) * p["length"]
    if name == "shard_map":
        devices = math.prod(p["mesh"].shape[a] for a in p["newly_manual_axes"])
        return count_jaxpr(p["jaxpr"], platform) * devices
    if name == "cond":
        counts = [count_jaxpr(b, platform) for b in p["branches"]]
        if p.get("branches_platforms"):
            return counts[_branch_for(p["branches_platforms"], platform)]
        return max(counts, key=lambda c: (c.matmul, c.total))
    if name == "while":
        raise FlopCountError("a while loop (unknown trip count) in the program: its FLOPs "
                             "cannot be counted from the jaxpr")
    if name in ELEMENTWISE:
        return FlopCount(elementwise=float(sum(_size(v) for v in eqn.outvars)))
    if name in TRANSCENDENTAL:
        return FlopCount(transcendental=float(sum(_size(v) for v in eqn.outvars)))
    if name in REDUCTION:
        return FlopCount(elementwise=float(sum(_size(v) for v in eqn.invars)))
    total = FlopCount()
    for inner in _inner_jaxprs(p):
        total = total + count_jaxpr(inner, platform)
    return total


def count_jaxpr(jaxpr: Any, platform: str = "cuda") -> FlopCount:
    """The FLOPs of a (closed) jaxpr as lowered for `platform` ("cuda", "tpu", "cpu", ...)."""
    total = FlopCount()
    for eqn in _jaxpr(jaxpr).eqns:
        total = total + _eqn_flops(eqn, platform)
    return total


def without_dead_code(jaxpr: Any) -> Any:
    """The open jaxpr with what no output needs removed, as XLA removes it: e.g. the input
    gradient a custom VJP computes for a first layer whose input is data."""
    from genart_jax.jax_compat import dce_jaxpr  # no public DCE in jax 0.10-0.12

    return dce_jaxpr(_jaxpr(jaxpr))


def count_fn(fn: Callable[..., Any], *args: Any, platform: str = "cuda") -> FlopCount:
    """The FLOPs of `fn(*args)` (arrays or ShapeDtypeStructs; nothing is computed), dead code
    removed first."""
    traced = fn.trace(*args) if hasattr(fn, "trace") else jax.jit(fn).trace(*args)
    return count_jaxpr(without_dead_code(traced.jaxpr), platform)
