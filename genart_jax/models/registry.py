"""The architectures `model.arch` names, each registered once, by its own module.

A model module in `genart_jax/models/` ends with one `register_architecture(Architecture(...))`
call: its family ("gan" or "vae"), its name within that family, its config section
`model.<section>` with defaults (settings only it reads), the builder of its Flax modules, an
optional validator and whether its step is convolution-bound. The package's `__init__` imports
every module of `genart_jax/models/` (importing this module imports the package first), so a
new architecture is its module, a recipe and a test: the config schema, `config.validate`,
`build_gan`/`build_vae` and the drivers find it here. An architecture with a state and step of
its own (the hierarchical VAE) names its hooks (`train.families`) with `hooks=`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One model architecture: `model.family` = `family` and `model.arch` = `name`.

    `section`: its settings live in `model.<section>` (unique over all architectures), with
    `defaults` as their schema (keys, types and default values). `build(settings, ...)`, with
    `settings` that section: for a GAN `build(settings, model, data, axis_name=, bn_momentum=)
    -> (generator, discriminator)` (the `model` and `data` config sections); for a VAE
    `build(settings, cfg) -> module` with `encode(x, y) -> (mu, logvar)` and `decode(z, y)`
    (or any module, for an architecture with `hooks` of its own).
    `check(settings, cfg)` raises ValueError with a message that names the key to change.
    `positive`: keys of the section that must be > 0 (checked whichever arch is chosen, as
    every schema value). `convolutional`: its fused steps are convolution-bound
    (`parallel.unroll_fused_steps`). `renamed`: flat `model.*` keys of older versions -> the
    section's key, refused in configs with a pointer to the new key (saved runs are mapped).
    `hooks`: the `train.families` hooks that train and serve it, where they are not its
    family's own (its state and step differ: the hierarchical VAE's are "hvae")."""
    name: str
    family: str
    section: str
    defaults: Mapping[str, Any]
    build: Callable[..., Any]
    check: Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict], None] | None = None
    positive: tuple[str, ...] = ()
    convolutional: bool = False
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hooks: str = ""

    def settings(self, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """This architecture's section of a `model` config section."""
        return model[self.section]


ARCHITECTURES: dict[tuple[str, str], Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add `arch` under (family, name), once; its section name must be new too."""
    if (arch.family, arch.name) in ARCHITECTURES:
        raise ValueError(f"{arch.family} architecture {arch.name!r} is registered already")
    if any(a.section == arch.section for a in ARCHITECTURES.values()):
        raise ValueError(f"config section model.{arch.section} is taken already")
    ARCHITECTURES[(arch.family, arch.name)] = arch
    return arch


def architectures() -> tuple[Architecture, ...]:
    """Every registered architecture, in the order their modules registered them."""
    return tuple(ARCHITECTURES.values())


def families() -> tuple[str, ...]:
    """The `model.family` values: the families of the registered architectures."""
    return tuple(dict.fromkeys(a.family for a in architectures()))


def names(family: str | None = None) -> tuple[str, ...]:
    """The `model.arch` values of `family` (default: of every family), each once."""
    return tuple(dict.fromkeys(a.name for a in architectures()
                               if family is None or a.family == family))


def architecture(family: str, name: str) -> Architecture:
    """The registered architecture, or a ValueError listing the family's."""
    if (family, name) not in ARCHITECTURES:
        raise ValueError(f"model.arch {name!r} is not a {family} architecture; choose one of "
                         f"{names(family)}")
    return ARCHITECTURES[(family, name)]


def architecture_of(cfg: ml_collections.ConfigDict) -> Architecture:
    """The architecture of a config (its `model.family` and `model.arch`)."""
    return architecture(cfg.model.family, cfg.model.arch)


def compute_dtype(name: str) -> jnp.dtype:
    """`model.dtype`'s name -> the dtype modules compute in (params stay float32)."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
