"""genart_jax.cpu_tuning: the CPU settings (malloc, XLA_FLAGS) applied where JAX computes on the
CPU and nowhere else, each case in a fresh process."""

import json
import os
import subprocess
import sys

import pytest

from genart_jax import cpu_convolutions, host_memory

_PROBE = """
import json, os
from genart_jax import cpu_tuning
got = cpu_tuning.tune_for_cpu()
print(json.dumps({**got, "xla_flags": os.environ.get("XLA_FLAGS", "")}))
"""


def _probe(**env) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "GENART_KEEP_HOST_MEMORY",
                         cpu_convolutions.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env}, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None
                    or cpu_convolutions._jaxlib_version() != cpu_convolutions.MEASURED_JAXLIB,
                    reason="needs glibc malloc and the jaxlib the XLA flag was measured on")
def test_cpu_settings_only_where_jax_computes_on_the_cpu():
    cpu = _probe(JAX_PLATFORMS="cpu")
    assert cpu == {"cpu": True, "host_memory_kept": True, "eigen_convolutions": True,
                   "xla_flags": cpu_convolutions.EIGEN_FLAG}
    for platforms in ("cuda", "tpu"):  # an accelerator host: nothing changes
        assert _probe(JAX_PLATFORMS=platforms) == {
            "cpu": False, "host_memory_kept": False, "eigen_convolutions": False,
            "xla_flags": ""}, platforms
    # on the CPU, each setting has its own opt-out
    assert _probe(JAX_PLATFORMS="cpu", GENART_KEEP_HOST_MEMORY="0")["host_memory_kept"] is False
    assert _probe(JAX_PLATFORMS="cpu", **{cpu_convolutions.OPT_OUT: "0"}) == {
        "cpu": True, "host_memory_kept": True, "eigen_convolutions": False, "xla_flags": ""}
