"""genart_jax.cpu_convolutions: XLA:CPU's convolutions through Eigen instead of YNNPACK, set
in XLA_FLAGS only where it is safe."""

import json
import os
import subprocess
import sys

import pytest

from genart_jax import cpu_convolutions as cc

# In a fresh process: the switch, then what XLA compiled a convolution to and the kernel-gradient
# form resample_conv picks for a pass above CPU_FORMS_MIN_FLOPS.
_PROBE = """
import json
from genart_jax import cpu_convolutions
applied = cpu_convolutions.use_eigen_convolutions()
import jax, jax.numpy as jnp
from genart_jax.models import resample_conv
b = jnp.ones((8, 16, 16, 32)); w = jnp.ones((4, 4, 32, 64))  # YNNPACK takes it
hlo = jax.jit(resample_conv.down_xla).lower(b, w).compile().as_text()
again = cpu_convolutions.use_eigen_convolutions()  # backends exist now: changes nothing
print(json.dumps({"applied": applied, "again": again, "ynn_conv": "ynn_fusion" in hlo,
                  "kg_form": resample_conv.kernel_grad_form((128, 8, 8, 128), 64)}))
"""


def _probe(**env) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", cc.OPT_OUT, "JAX_DISABLE_MOST_OPTIMIZATIONS")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env}, check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(cc._jaxlib_version() != cc.MEASURED_JAXLIB,
                    reason="the flag is set only on the jaxlib it was measured on")
def test_the_switch_moves_convolutions_off_ynnpack_and_the_kernel_gradient_to_xla():
    on = _probe()
    assert on == {"applied": True, "again": True, "ynn_conv": False, "kg_form": "xla"}
    off = _probe(**{cc.OPT_OUT: "0"})
    assert off == {"applied": False, "again": False, "ynn_conv": True, "kg_form": "shifted"}
    # The user's own YNNPACK setting wins and is read as such.
    mine = _probe(XLA_FLAGS=f"{cc.YNN_FLAG}=-individual_dot")
    assert mine["applied"] is False and mine["ynn_conv"] is True


def test_cpu_only_follows_jax_platforms_then_the_installed_plugins(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert cc._cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "tpu,cpu")
    assert not cc._cpu_only()
    monkeypatch.delenv("JAX_PLATFORMS")
    real = cc.importlib.util.find_spec
    monkeypatch.setattr(cc.importlib.util, "find_spec",
                        lambda name: object() if name == "libtpu" else real(name))
    assert not cc._cpu_only()


def test_eigen_convolutions_reads_the_last_ynn_fusion_flag():
    assert cc.eigen_convolutions(cc.EIGEN_FLAG)
    assert cc.eigen_convolutions(f"--xla_force_host_platform_device_count=8 {cc.EIGEN_FLAG}")
    assert cc.eigen_convolutions(f"{cc.YNN_FLAG}=-individual_dot,-individual_convolution")
    assert not cc.eigen_convolutions("")
    assert not cc.eigen_convolutions(f"{cc.YNN_FLAG}=-individual_dot")
    assert not cc.eigen_convolutions(f"{cc.EIGEN_FLAG} {cc.YNN_FLAG}=+individual_convolution")
    assert not cc.eigen_convolutions(f"-{cc.EIGEN_FLAG}")  # not the flag itself


def test_use_changes_nothing_once_backends_exist_or_on_another_jaxlib(monkeypatch):
    import jax

    jax.devices()  # this test process's backends exist
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert cc.use_eigen_convolutions() is False
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    monkeypatch.setattr(cc, "_backends_exist", lambda: False)
    monkeypatch.setattr(cc, "_jaxlib_version", lambda: (0, 11))
    assert cc.use_eigen_convolutions() is False
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    monkeypatch.setattr(cc, "_jaxlib_version", lambda: cc.MEASURED_JAXLIB)
    monkeypatch.setattr(cc, "_cpu_only", lambda: False)  # e.g. a TPU or GPU plugin installed
    assert cc.use_eigen_convolutions() is False
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    monkeypatch.setattr(cc, "_cpu_only", lambda: True)
    assert cc.use_eigen_convolutions() is True
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {cc.EIGEN_FLAG}"
    assert cc.use_eigen_convolutions() is True  # set once, not twice
    assert os.environ["XLA_FLAGS"].count(cc.YNN_FLAG) == 1
