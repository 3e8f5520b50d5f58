"""The GPU and TPU programs of the train steps, built on this CPU-only machine: XLA's own
convolutions only (the CPU forms of resample_conv are chosen at lowering), the compute dtype
asked for, no host callbacks, the state donated, no float64."""

import jax
import pytest

from genart_jax.config import apply_overrides, load_config
from genart_jax.train import abstract_state
from genart_jax.train.programs import convolution_types, lowered_texts, program_problems

MODELS = {  # DCGAN-64 in bfloat16 at the GPU target's batch, the conv VAE at 64 px
    "dcgan64-bf16": ("dcgan64_celeba", {"model.dtype": "bfloat16", "train.batch_size": "512"}),
    "convvae64": ("convvae64_celeba", {"train.batch_size": "64"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_and_tpu_programs_are_fit_for_the_accelerator(name):
    config, overrides = MODELS[name]
    cfg = load_config(config, overrides)
    texts = lowered_texts(cfg, ["cuda", "tpu", "cpu"])
    # XLA's own forms everywhere (model.conv_forms=xla): the reference
    (reference,) = lowered_texts(apply_overrides(cfg, {"model.conv_forms": "xla"}),
                                 ["cpu"]).values()
    want = sorted(convolution_types(reference))
    leaves = len(jax.tree.leaves(abstract_state(cfg)))
    for platform in ("cuda", "tpu"):
        text = texts[platform]
        assert sorted(convolution_types(text)) == want, platform
        assert text.count("dot_general") == reference.count("dot_general"), platform
        assert program_problems(text, leaves, cfg.model.dtype) == [], platform
    # The CPU program of the same trace has the CPU forms: in bfloat16 matmuls, no convolution.
    if cfg.model.dtype == "bfloat16":
        assert want and convolution_types(texts["cpu"]) == []


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
