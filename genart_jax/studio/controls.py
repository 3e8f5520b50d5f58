"""The page's view controls (truncation, per-class directions, themes, an hvae's temperature)
as validated values and the pure maps they apply to latents and labels before generation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from genart_jax import sampling

PSI_RANGE = (0.0, 2.0)
TEMPERATURE_RANGE = (0.0, 2.0)
STRENGTH_LIMIT = 10.0
SEED_LIMIT = 2**31 - 1
MAX_SAMPLES = 256
MAX_FRAMES = 32


class ControlError(ValueError):
    """A control value the page sent that cannot be applied (a 400 with this message)."""


@dataclasses.dataclass(frozen=True)
class Controls:
    """How latents are turned into images: z -> truncate(z, psi, centre) + sum_k s_k * d_k,
    labels cycling over `themes` (conditional models; None: every class in turn); an hvae's
    lower latent groups at `temperature` (None: the session's)."""
    psi: float = 1.0
    strengths: tuple[tuple[int, float], ...] = ()
    themes: tuple[int, ...] | None = None
    temperature: float | None = None

    @property
    def is_identity(self) -> bool:
        """True when the images are the session's own (nothing moved, no theme picked, the
        session's temperature)."""
        return (self.psi == 1.0 and not any(s for _, s in self.strengths)
                and self.themes is None and self.temperature is None)


def number(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite float in [lo, hi] from JSON, or a ControlError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ControlError(f"{what} must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def whole(value: Any, what: str, lo: int, hi: int) -> int:
    """An int in [lo, hi] from JSON, or a ControlError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(f"{what} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ControlError(f"{what} must be in {lo}..{hi}, got {value}")
    return value


def parse_controls(data: Any, num_classes: int, directions: dict[int, np.ndarray],
                   has_temperature: bool = False) -> Controls:
    """Controls from the page's JSON {"psi": 0.7, "strengths": {"3": 1.5}, "themes": [1, 4],
    "temperature": 0.8} (temperature: models that have one, an hvae); missing keys keep their
    defaults, anything else is a ControlError."""
    if data is None:
        return Controls()
    keys = {"psi", "strengths", "themes", "temperature"}
    if not isinstance(data, dict) or set(data) - keys:
        raise ControlError(f"controls are {sorted(keys)}; got {str(data)[:80]}")
    temperature = data.get("temperature")
    if temperature is not None:
        if not has_temperature:
            raise ControlError("a temperature applies to an hvae's latent groups; this model "
                               "has none (use truncation psi)")
        temperature = number(temperature, "temperature", *TEMPERATURE_RANGE)
    psi = number(data.get("psi", 1.0), "truncation psi", *PSI_RANGE)
    raw = data.get("strengths") or {}
    if not isinstance(raw, dict):
        raise ControlError(f"strengths map a class to a number, got {str(raw)[:80]}")
    strengths = []
    for key, value in sorted(raw.items()):
        k = int(key) if isinstance(key, str) and key.isdigit() else None
        if k not in directions:
            raise ControlError(f"no direction for class {key!r}; this run has "
                               f"{sorted(directions) or 'none'} (from `genart directions`)")
        strengths.append((k, number(value, f"strength of class {k}", -STRENGTH_LIMIT,
                                    STRENGTH_LIMIT)))
    themes = data.get("themes")
    if themes is not None:
        if num_classes <= 0:
            raise ControlError("themes need a conditional model; this one is unconditional")
        if not isinstance(themes, list) or not themes:
            raise ControlError(f"themes are a non-empty list of classes, got {themes!r}")
        themes = tuple(whole(t, "theme", 0, num_classes - 1) for t in themes)
    return Controls(psi, tuple(strengths), themes, temperature)


def apply_latents(z: np.ndarray, controls: Controls, centre: np.ndarray,
                  directions: dict[int, np.ndarray]) -> np.ndarray:
    """The latents (N, D) to generate: truncated toward `centre` (the session's refit mean),
    then pushed along each class direction by its strength."""
    out = np.asarray(sampling.truncate(z, controls.psi, centre), np.float32)
    for k, s in controls.strengths:
        out = np.asarray(sampling.apply_direction(out, directions[k], s), np.float32)
    return out


def labels_for(num: int, controls: Controls, num_classes: int) -> np.ndarray | None:
    """Class labels (N,) for a conditional model (themes cycling; default all classes)."""
    labels, _ = sampling.theme_labels(num, num_classes, list(controls.themes or []) or None)
    return labels
