"""Shared by the studio tests: one tiny trained GAN (and one tiny hvae) per test session, a
running studio on a copy of it, and a small JSON client for its API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax

from genart_jax import checkpoint
from genart_jax.config import to_json
from genart_jax.models import build_gan
from genart_jax.studio import Studio
from genart_jax.studio.client import StudioClient
from genart_jax.studio.server import StudioServer
from genart_jax.train.optim import make_optimizer
from genart_jax.train.state import init_gan_state
from tests.conftest import tiny_config

_TRAINED: dict[str, Path] = {}


def trained_gan(tmp_path_factory, num_classes: int = 0) -> Path:
    """A tiny DCGAN workdir (conditional with `num_classes`), made once per test session (tests
    copy it with `workdir_copy`): its initial weights saved as checkpoint 4 with config.json and
    a metrics.jsonl, as a run writes them. The studio needs no trained weights, and this skips
    compiling a train step."""
    name = f"gan{num_classes}"
    if name not in _TRAINED:
        workdir = tmp_path_factory.mktemp(f"studio_{name}")
        cfg = tiny_config("dcgan", **{"model.num_classes": str(num_classes)})
        generator, discriminator = build_gan(cfg.model, cfg.data, axis_name=None)
        state = init_gan_state(
            jax.random.PRNGKey(0), generator, discriminator, make_optimizer(cfg.g_optimizer),
            make_optimizer(cfg.d_optimizer), latent_dim=cfg.model.latent_dim,
            image_shape=(cfg.data.image_size, cfg.data.image_size, cfg.data.channels),
            num_classes=num_classes)
        if num_classes:  # the label path starts at zero: perturb so that labels matter
            leaves, tree = jax.tree.flatten(state.g_params)
            keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
            noisy = jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape, x.dtype)
                                              for x, k in zip(leaves, keys, strict=True)])
            state = state.replace(g_params=noisy, ema_g_params=noisy)
        (workdir / "config.json").write_text(to_json(cfg))
        checkpoint.save(workdir, 4, jax.device_get(state),
                        {"config": json.loads(to_json(cfg))})
        (workdir / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "g_loss": 1.0 / s, "images_per_sec": 50.0 * s}) + "\n"
            for s in (2, 4)))
        _TRAINED[name] = workdir
    return _TRAINED[name]


TINY_HVAE = {"model.hvae.widths": "(8,8,8,8,8)", "model.hvae.dec_blocks": "(1,1,1,1,1)",
             "model.hvae.zdim": "3", "train.batch_size": "16"}


def trained_hvae(tmp_path_factory) -> Path:
    """A tiny hvae_digits workdir (32x32x1, width 8, one latent group per resolution, the top
    group (1, 1, 3)), made once per test session like `trained_gan`: its initial weights,
    perturbed so that the prior blocks (initialised to output zero) and the top latents
    matter, saved as checkpoint 4."""
    if "hvae" not in _TRAINED:
        from genart_jax.config import load_config
        from genart_jax.train import hvae

        workdir = tmp_path_factory.mktemp("studio_hvae")
        cfg = load_config("hvae_digits", TINY_HVAE)
        state = hvae._init_fn(cfg)[-1](jax.random.PRNGKey(0))
        leaves, tree = jax.tree.flatten(state.params)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        noisy = jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                          for x, k in zip(leaves, keys, strict=True)])
        state = state.replace(params=noisy, ema_params=noisy)
        (workdir / "config.json").write_text(to_json(cfg))
        checkpoint.save(workdir, 4, jax.device_get(state), {"config": json.loads(to_json(cfg))})
        _TRAINED["hvae"] = workdir
    return _TRAINED["hvae"]


def workdir_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def start(workdir: Path, **kw) -> StudioServer:
    server = StudioServer(Studio(workdir, **kw), "127.0.0.1", 0)
    server.start()
    return server


def Client(server: StudioServer, token: str | None = None) -> StudioClient:  # noqa: N802
    """The package's JSON client of an in-process server (a wrong `token` to test refusals)."""
    return StudioClient.of(server, token)
