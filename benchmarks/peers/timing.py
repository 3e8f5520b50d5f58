"""What a PyTorch peer row records about the peer itself (the timing is `genart bench`'s own,
interleaved with genart_jax's cases; see `benchmarks.interleave`)."""

from __future__ import annotations

from typing import Any


def peer_info(compile_model: bool) -> dict[str, Any]:
    """The peer's name ("pytorch eager" or "pytorch torch.compile"), torch version, threads."""
    import torch

    return {"peer": "pytorch " + ("torch.compile" if compile_model else "eager"),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
