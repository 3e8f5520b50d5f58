"""What the commands ask of a trained model (`genart sample`, `genart eval`), what they get
back, and the one error for a request a model cannot serve. Each family's hooks
(`train.families`) answer them; the CLI only builds a request and prints the answer."""

from __future__ import annotations

import dataclasses
from typing import Any


class RequestError(ValueError):
    """A request this model cannot serve (a GAN-only option for a VAE, a bad count or file):
    the CLI's one-line error, exit code 2."""


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """A grid of `num` samples at `seed`; `themes` of a conditional model (None: every class);
    `weights` names the weights in the description ("EMA", "raw", "exported"). GAN only: the
    latents pulled toward the mean by `truncation`, drawn as slerp strips of `frames`
    (`interpolate`), pushed by `strength` times the direction in the .npy file `direction`."""
    num: int = 64
    seed: int = 0
    themes: list[int] | None = None
    weights: str = "EMA"
    truncation: float | None = None
    interpolate: bool = False
    frames: int = 8
    direction: str | None = None
    strength: float = 1.0
    temperature: tuple[float, ...] | None = None  # HVAE: one, or one per latent group


@dataclasses.dataclass(frozen=True)
class Written:
    """Files a sample request wrote: `count` samples described by `what` in `paths[0]`; `also`
    describes the other paths (empty when there are none)."""
    count: int
    what: str
    paths: list
    also: str = ""


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """`genart eval` of a workdir: the held-out `split` (None: the family's default), `samples`
    (a VAE's K of its IWAE bound), `limit` real images drawn with `subset_seed`, the EMA or raw
    weights, the sample-quality metrics asked for (None: the family's default), an HVAE's
    prior `temperature` for them (None: the config's)."""
    split: str | None = None
    samples: int | None = None
    limit: int | None = None
    subset_seed: int = 0
    use_ema: bool = True
    metrics: tuple[str, ...] | None = None
    temperature: tuple[float, ...] | None = None  # HVAE: of the scored samples (None: config's)


@dataclasses.dataclass(frozen=True)
class EvalPlan:
    """A family's answer to an EvalRequest: its own results (`fields`, in the order they are
    recorded), a line that says them (`summary`, or None), what its samples are (`samples_of`),
    and the split and metrics to score its samples with (none: `metrics` empty), and the
    config to draw them with where it is not the run's (`config`)."""
    fields: dict[str, Any]
    summary: str | None
    samples_of: str
    split: str
    metrics: tuple[str, ...]
    config: Any = None  # the config its samples are drawn with (None: the run's own)


def drawn(num: int, total: int, seed: int) -> str:
    """How many images of a split were scored: all, or a seeded draw of some."""
    if num >= total:
        return f"{num} images"
    return f"{num} of {total} images, a random draw with --subset-seed {seed}"
