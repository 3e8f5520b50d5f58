"""The process-wide settings that tune JAX for computing on the CPU, in one place, applied only
where JAX will compute on the CPU.

`tune_for_cpu()` is the entry point: the CLI and the benchmark scripts call it first thing, and
a notebook calls it before its first JAX computation (`import genart_jax.cpu_tuning as t;
t.tune_for_cpu()`). Where JAX computes on the CPU (JAX_PLATFORMS=cpu, or no accelerator plugin
installed: `cpu_convolutions.computes_on_cpu`) it

- keeps freed host memory in the process (`host_memory`: one malloc arena, no mmap, no
  trimming; GENART_KEEP_HOST_MEMORY=0 opts out), and
- runs XLA:CPU's convolutions with Eigen (`cpu_convolutions`: an XLA_FLAGS entry;
  GENART_EIGEN_CONVOLUTIONS=0 opts out).

On a GPU or TPU host it changes nothing: there one malloc arena would make the input workers,
the runtime, Orbax's writers and the distributed client contend for one lock, and the CPU's
convolutions do not matter.
"""

from __future__ import annotations

from genart_jax import cpu_convolutions, host_memory


def tune_for_cpu() -> dict[str, bool]:
    """Apply the CPU settings where JAX computes on the CPU; before JAX's first computation.
    Returns what is in effect: {"cpu": ..., "host_memory_kept": ..., "eigen_convolutions": ...}.
    """
    cpu = cpu_convolutions.computes_on_cpu()
    kept = host_memory.keep_freed_memory_unless_opted_out() if cpu else host_memory.is_kept()
    eigen = (cpu_convolutions.use_eigen_convolutions() if cpu
             else cpu_convolutions.eigen_convolutions())
    return {"cpu": cpu, "host_memory_kept": kept, "eigen_convolutions": eigen}
