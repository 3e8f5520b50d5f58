"""The only place genart_jax reaches into JAX's private modules (`jax._src`), for what JAX
0.10-0.12 has no public API for. Each accessor says what it needs; a JAX release that moves one
breaks this file alone."""

from __future__ import annotations

from typing import Any


def backends_are_initialized() -> bool:
    """Whether JAX has started its backends (after which XLA_FLAGS and platform choices no
    longer take effect); False where this JAX cannot tell."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    check = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(check()) if check else False


def dce_jaxpr(open_jaxpr: Any) -> Any:
    """`open_jaxpr` with every equation no output needs removed, as XLA removes them."""
    from jax._src.interpreters import partial_eval as pe

    return pe.dce_jaxpr(open_jaxpr, [True] * len(open_jaxpr.outvars), instantiate=True)[0]


def distributed_client() -> Any | None:
    """JAX's coordination-service client of a multi-process run, or None."""
    from jax._src import distributed

    return distributed.global_state.client


def preemption_sync_manager() -> Any | None:
    """JAX's preemption sync manager of a multi-process run, or None."""
    from jax._src import distributed

    return distributed.global_state.preemption_sync_manager
