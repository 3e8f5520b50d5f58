"""Which library runs XLA:CPU's convolutions: Eigen's instead of YNNPACK's.

jaxlib 0.10 hands every large enough convolution on CPU to YNNPACK (a `ynn_fusion` in the
compiled HLO). On the DCGAN-32 layers of this project's 2-core x86-64 machine, Eigen's
convolutions, which XLA:CPU runs when YNNPACK's convolution fusion is switched off, are
faster: the strided convolution at the middle layers 11.4 against 13.4 ms, XLA's kernel
gradient 15.3 against 22.7 ms, the transpose unchanged (`python -m benchmarks.conv_passes`,
README "Benchmarks"). Whole float32 train steps run 1.1-1.3x faster (bench_dcgan32,
dcgan_digits, bench_convvae32). Matmuls stay with YNNPACK.

The switch is an XLA flag, `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`,
which XLA reads from the XLA_FLAGS environment variable once, when JAX creates its backends.
So `use_eigen_convolutions()` appends it to XLA_FLAGS, and only:

- before JAX's backends exist (the CLI and the benchmark scripts call it first thing; from
  Python, call it before JAX's first computation);
- on jaxlib 0.10, where the flag exists and was measured: XLA aborts the process on a flag it
  does not know, so on other versions it changes nothing;
- only where JAX will compute on the CPU: JAX_PLATFORMS is "cpu", or no accelerator plugin
  (libtpu, a `jax_plugins` package or entry point) is installed. Accelerator runtimes may read
  XLA flags of their own, and there the CPU's convolutions do not matter;
- unless XLA_FLAGS already sets YNNPACK's fusion types (the user's choice wins), or the
  environment sets GENART_EIGEN_CONVOLUTIONS=0.

`eigen_convolutions()` says whether XLA_FLAGS switches YNNPACK's convolutions off;
`started_with_eigen()` whether the running backends were started so, and
`genart_jax.models.resample_conv` picks its CPU forms by that.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
EIGEN_FLAG = f"{YNN_FLAG}=-individual_convolution"
OPT_OUT = "GENART_EIGEN_CONVOLUTIONS"
MEASURED_JAXLIB = (0, 10)  # major, minor: the versions with the flag, measured


def _ynn_flag_value(xla_flags: str) -> str | None:
    """The value of the last `--xla_cpu_experimental_ynn_fusion_type` in `xla_flags`, or None."""
    values = re.findall(rf"(?:^|\s){re.escape(YNN_FLAG)}=(\S*)", xla_flags)
    return values[-1] if values else None


def eigen_convolutions(xla_flags: str | None = None) -> bool:
    """Whether `xla_flags` (default: the XLA_FLAGS environment variable) removes YNNPACK's
    convolution fusion, so that XLA:CPU runs convolutions with Eigen."""
    value = _ynn_flag_value(os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags)
    return value is not None and "-individual_convolution" in value.split(",")


_eigen_at_start: bool | None = None


def started_with_eigen() -> bool:
    """Whether XLA:CPU runs convolutions with Eigen in this process: `eigen_convolutions()` of
    XLA_FLAGS as XLA read it, once, when JAX created its backends (read once after that and
    kept; before, the current XLA_FLAGS, which the backends will read)."""
    global _eigen_at_start
    if _eigen_at_start is not None:
        return _eigen_at_start
    eigen = eigen_convolutions()
    if _backends_exist():
        _eigen_at_start = eigen
    return eigen


def in_effect() -> bool:
    """Whether this process's convolutions run with Eigen: JAX computes on the CPU and XLA_FLAGS
    switches YNNPACK's convolutions off (what the benchmark reports record)."""
    import jax

    return jax.default_backend() == "cpu" and started_with_eigen()


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        import jaxlib.version
    except ImportError:
        return None
    m = re.match(r"(\d+)\.(\d+)", jaxlib.version.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _backends_exist() -> bool:
    from genart_jax.jax_compat import backends_are_initialized

    return backends_are_initialized()


def _cpu_only() -> bool:
    """Whether JAX will compute on the CPU: JAX_PLATFORMS is "cpu", or no accelerator plugin is
    installed (libtpu, or anything JAX discovers as a plugin)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms == "cpu"
    if importlib.util.find_spec("libtpu") or importlib.util.find_spec("jax_plugins"):
        return False
    return not list(importlib.metadata.entry_points(group="jax_plugins"))


def computes_on_cpu() -> bool:
    """Whether JAX will compute on the CPU in this process (the rule of `_cpu_only`)."""
    return _cpu_only()


def use_eigen_convolutions() -> bool:
    """Append `EIGEN_FLAG` to XLA_FLAGS where it is safe and not opted out of (see the module
    docstring). Returns whether XLA_FLAGS now switches YNNPACK's convolutions off."""
    flags = os.environ.get("XLA_FLAGS", "")
    if (os.environ.get(OPT_OUT, "1").strip() == "0" or _ynn_flag_value(flags) is not None
            or _jaxlib_version() != MEASURED_JAXLIB or not _cpu_only() or _backends_exist()):
        return eigen_convolutions(flags)
    os.environ["XLA_FLAGS"] = f"{flags} {EIGEN_FLAG}".strip()
    return True
