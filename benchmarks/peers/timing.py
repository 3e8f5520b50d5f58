"""What a PyTorch peer row records about the peer itself (the timing is `genart bench`'s own,
interleaved with genart_jax's cases; see `benchmarks.interleave`)."""

from __future__ import annotations

from typing import Any


def peer_info(compile_model: bool, dtype: str = "float32") -> dict[str, Any]:
    """The peer's name ("pytorch eager" or "pytorch torch.compile"), its compute dtype
    ("bfloat16": under `torch.autocast`), torch version, threads."""
    import torch

    return {"peer": "pytorch " + ("torch.compile" if compile_model else "eager"),
            "dtype": dtype, "torch": torch.__version__, "threads": torch.get_num_threads()}


def autocast(dtype: str):
    """The context a peer's forward passes run in: PyTorch's mixed precision on the CPU for
    "bfloat16" (convolutions and matmuls in bfloat16, reductions and the loss in float32, as
    genart_jax's model.dtype does), nothing for "float32"."""
    import torch

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"peer dtype must be float32 or bfloat16, not {dtype!r}")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
