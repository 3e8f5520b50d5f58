"""What a PyTorch peer row records about the peer itself (the timing is `genart bench`'s own,
interleaved with genart_jax's cases; see `genart_jax.bench.interleave`)."""

from __future__ import annotations

from typing import Any


def peer_device(jax_backend: str) -> str:
    """Where the peers run: "cuda" when genart_jax runs on a GPU and PyTorch can use one (the
    issue compares on the same GPU), else "cpu". The row records it, so a CPU peer next to GPU
    cases is visible as such."""
    import torch

    return "cuda" if jax_backend == "gpu" and torch.cuda.is_available() else "cpu"


def peer_info(compile_model: bool, dtype: str = "float32", device: str = "cpu"
              ) -> dict[str, Any]:
    """The peer's name ("pytorch eager" or "pytorch torch.compile"), its compute dtype
    ("bfloat16": under `torch.autocast`), device, torch version, CPU threads."""
    import torch

    return {"peer": "pytorch " + ("torch.compile" if compile_model else "eager"),
            "dtype": dtype, "device": device, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def autocast(dtype: str, device: str = "cpu"):
    """The context a peer's forward passes run in: PyTorch's mixed precision on `device` for
    "bfloat16" (convolutions and matmuls in bfloat16, reductions and the loss in float32, as
    genart_jax's model.dtype does), nothing for "float32"."""
    import torch

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"peer dtype must be float32 or bfloat16, not {dtype!r}")
    return torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def finish(device: str) -> None:
    """Wait for the work queued on `device` (CUDA runs asynchronously), so that a timed step
    ends when its work does."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
