"""The compiled train step as a program for a platform, inspected without running it.

`export_step(cfg, platforms)` lowers a config's train step (jit over shard_map, one device, the
whole global batch, nothing computed) with `jax.export` for any platforms, from any process: a
CPU-only machine can build the programs a GPU or TPU would run. `program_problems` lists what in
such a program a GPU/TPU run must not have. `step_flops(cfg)` counts a step's FLOPs from its
jaxpr (`genart_jax.flops`), for MFU on every backend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from genart_jax import flops
from genart_jax.config import apply_overrides

_CALLBACK = re.compile(r"custom_call\s*@(xla_python|xla_ffi_python|.*callback)", re.I)
_CONVOLUTION = re.compile(r"stablehlo\.convolution.*?:\s*\((tensor<[^>]*>), (tensor<[^>]*>)\)")
_DONATED = re.compile(r"jax\.buffer_donor\s*=\s*true|tf\.aliasing_output")


def abstract_batch(cfg: Any, k: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one call's host batch: ([k,] d_steps, global batch, H, W, C) uint8 images, as
    the input pipeline delivers them (the step scales them to the model's range)."""
    s, c, b = cfg.data.image_size, cfg.data.channels, cfg.train.batch_size
    lead = (k,) if k > 1 else ()
    shape = (*lead, cfg.train.d_steps, b, s, s, c)
    return {"image": jax.ShapeDtypeStruct(shape, np.uint8),
            "label": jax.ShapeDtypeStruct(shape[:-3], np.int32)}


def step_and_arguments(cfg: Any, device: jax.Device | None = None, k: int = 1
                       ) -> tuple[Any, tuple[Any, Any]]:
    """(the driver's jitted call, abstract (state, batch) placed as it places them) for one
    device: the shard_map driver of `k` steps per call."""
    from genart_jax.train.loop import build_training

    device = device or jax.devices()[0]
    driver, init_fn = build_training(apply_overrides(cfg, {"train.driver": "shard_map"}),
                                     [device], k)
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=driver.replicated),
        jax.eval_shape(init_fn, jax.random.PRNGKey(0)))
    batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=driver.batch_sharding),
        abstract_batch(cfg, k))
    return driver._step, (state, batch)


def export_step(cfg: Any, platforms: Sequence[str], k: int = 1) -> jax.export.Exported:
    """The train step of `cfg` exported (serializable) for `platforms` ("cpu", "cuda", "tpu")."""
    step, args = step_and_arguments(cfg, k=k)
    return jax.export.export(step, platforms=tuple(platforms))(*args)


def step_flops(cfg: Any, platform: str = "cuda", k: int = 1) -> flops.FlopCount:
    """FLOPs of one call of `k` train steps of `cfg` on the whole global batch (forward,
    backward, optimizer, R1/R2 passes where on), counted from the traced step as lowered for
    `platform`: on "cuda" or "tpu" with XLA's own convolutions, the model's FLOPs on every
    backend (the CPU forms of `resample_conv` do extra work that is no model FLOP)."""
    step, args = step_and_arguments(cfg, k=k)
    return flops.count_fn(step, *args, platform=platform)


def lowered_texts(cfg: Any, platforms: Sequence[str], k: int = 1) -> dict[str, str]:
    """The train step of `cfg` traced once and lowered for each platform: StableHLO text."""
    step, args = step_and_arguments(cfg, k=k)
    traced = step.trace(*args)
    return {p: traced.lower(lowering_platforms=(p,)).as_text() for p in platforms}


def convolution_types(text: str) -> list[tuple[str, str]]:
    """(input type, kernel type) of every `stablehlo.convolution` in a module's text."""
    return _CONVOLUTION.findall(text)


def donated_arguments(text: str) -> int:
    """How many of the main function's arguments are donated (aliased to an output)."""
    main = text[text.find("func.func public @main"):]
    return len(_DONATED.findall(main[:main.find("{\n")]))


def program_problems(text: str, num_state_leaves: int, dtype: str = "float32") -> list[str]:
    """What a GPU/TPU program (StableHLO text) must not have: host callbacks, float64, state
    not donated, or convolutions not in `dtype`. Empty when the program is fit to run."""
    problems = []
    if _CALLBACK.search(text):
        problems.append("a host callback")
    if re.search(r"\bf64\b|xf64>", text):
        problems.append("float64 values")
    donated = donated_arguments(text)
    if donated < num_state_leaves:
        problems.append(f"{donated} of {num_state_leaves} state buffers donated")
    short = {"float32": "f32", "bfloat16": "bf16"}[dtype]
    for types in convolution_types(text):
        if not all(t.endswith(f"x{short}>") for t in types):
            problems.append(f"a convolution of {types}, not {dtype}")
            break
    return problems
