"""The GPU and TPU programs of the train steps, built on this CPU-only machine: XLA's own
convolutions only (the CPU forms of resample_conv and R3GAN's CPU form of grouped convolutions
are chosen at lowering), the compute dtype asked for, no host callbacks, the state donated, no
float64."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genart_jax import dmol
from genart_jax.config import apply_overrides, load_config
from genart_jax.models import hvae, r3gan
from genart_jax.parallel import make_driver
from genart_jax.train import abstract_state
from genart_jax.train import hvae_step as hs
from genart_jax.train.programs import convolution_types, lowered_texts, program_problems

MODELS = {  # DCGAN-64 in bfloat16 at the GPU target's batch, the conv VAE at 64 px, R3GAN-256
    "dcgan64-bf16": ("dcgan64_celeba", {"model.dtype": "bfloat16", "train.batch_size": "512"}),
    "convvae64": ("convvae64_celeba", {"train.batch_size": "64"}),
    # the recipe's network, batch (32) and R1 + R2, bfloat16 as the recipe has it: ~12 s here
    "r3gan256-bf16": ("r3gan_folder256", {"model.dtype": "bfloat16"}),
}


def grouped_convolutions(text: str) -> int:
    """How many convolutions of a module's text have more than one feature group."""
    return sum(int(n) > 1 for n in re.findall(r"feature_group_count = (\d+)", text))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_and_tpu_programs_are_fit_for_the_accelerator(name, monkeypatch):
    config, overrides = MODELS[name]
    cfg = load_config(config, overrides)
    texts = lowered_texts(cfg, ["cuda", "tpu", "cpu"])
    # XLA's own forms everywhere (model.conv_forms=xla; R3GAN's grouped convolutions as XLA's
    # grouped convolution, not the CPU's dense one of a block-diagonal kernel): the reference
    monkeypatch.setattr(r3gan, "grouped_conv", jax.lax.conv_general_dilated)
    (reference,) = lowered_texts(apply_overrides(cfg, {"model.conv_forms": "xla"}),
                                 ["cpu"]).values()
    want = sorted(convolution_types(reference))
    leaves = len(jax.tree.leaves(abstract_state(cfg)))
    for platform in ("cuda", "tpu"):
        text = texts[platform]
        assert sorted(convolution_types(text)) == want, platform
        assert text.count("dot_general") == reference.count("dot_general"), platform
        assert program_problems(text, leaves, cfg.model.dtype) == [], platform
    # The CPU program of the same trace has the CPU forms: R3GAN's grouped convolutions dense
    # (block-diagonal kernels); DCGAN's in bfloat16 matmuls, no convolution.
    if cfg.model.arch == "r3gan":
        assert grouped_convolutions(reference) > 0
        assert grouped_convolutions(texts["cpu"]) == 0
        assert len(convolution_types(texts["cpu"])) == len(want)
    elif cfg.model.dtype == "bfloat16":
        assert want and convolution_types(texts["cpu"]) == []


@pytest.mark.slow
def test_hvae_cuda_and_tpu_programs_are_fit_for_the_accelerator():
    """VDVAE's CIFAR-10 network (39M parameters) in bfloat16 at VDVAE's per-GPU batch (16),
    AdamW, through the shard_map driver on uint8 images: ~23 s on 2 cores (trace ~7 s, three
    lowerings ~8 s, the rest building the network's shapes and scanning the 13 MB texts)."""
    model = hvae.HVAE(**hvae.vdvae_cifar10(), dtype=jnp.bfloat16)
    tx = hs.make_hvae_optimizer()
    driver = make_driver("shard_map", hs.make_hvae_step(model, tx), jax.devices()[:1])
    init = functools.partial(hs.init_hvae_state, model=model, tx=tx)
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=driver.replicated),
        jax.eval_shape(init, jax.random.PRNGKey(0)))
    batch = {"image": jax.ShapeDtypeStruct((1, 16, 32, 32, 3), np.uint8,
                                           sharding=driver.batch_sharding)}
    traced = driver._step.trace(state, batch)
    texts = {p: traced.lower(lowering_platforms=(p,)).as_text() for p in ("cuda", "tpu", "cpu")}
    # The HVAE has no CPU forms (plain nn.Conv): its CPU program is the reference.
    reference = texts["cpu"]
    want = sorted(convolution_types(reference))
    # float32 by design (hvae's docstring): the 1x1 conv to the DMoL parameters, forward and
    # its two gradients; every other convolution is bfloat16
    head = [t for t in want if not all(x.endswith("xbf16>") for x in t)]
    width = f"x{dmol.num_params(model.channels, model.num_mixtures)}xf32>"
    assert len(head) == 3 and all(any(x.endswith(width) for x in t) for t in head), head
    assert len(want) > 1000
    leaves = len(jax.tree.leaves(state))
    for platform in ("cuda", "tpu"):
        text = texts[platform]
        assert sorted(convolution_types(text)) == want, platform
        assert text.count("dot_general") == reference.count("dot_general"), platform
        body = "\n".join(line for line in text.splitlines()
                         if not ("stablehlo.convolution" in line and width in line))
        assert program_problems(body, leaves, "bfloat16") == [], platform


def test_program_problems_name_what_a_gpu_run_must_not_have():
    conv = ("stablehlo.convolution(%a, %b) {x} : (tensor<8x4x4x3xf32>, tensor<4x4x3x8xf32>) "
            "-> tensor<8x2x2x8xf32>")
    text = ("func.func public @main(%arg0: tensor<2xf32> {tf.aliasing_output = 0 : i32}, "
            "%arg1: tensor<2xf64>) -> tensor<2xf32> {\n"
            f"  {conv}\n  stablehlo.custom_call @xla_python_cpu_callback(%x)\n}}")
    assert program_problems(text, 2, "bfloat16") == [
        "a host callback", "float64 values", "1 of 2 state buffers donated",
        "a convolution of ('tensor<8x4x4x3xf32>', 'tensor<4x4x3x8xf32>'), not bfloat16"]
    assert program_problems(text.replace("f64", "f32").replace("xla_python_cpu_callback", "x")
                            .replace("%arg1: tensor<2xf32>", "%arg1: tensor<2xf32> "
                                     "{jax.buffer_donor = true}"), 2, "float32") == []
