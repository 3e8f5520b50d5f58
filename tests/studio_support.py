"""Shared by the studio tests: one tiny trained GAN per test session, a running studio on a
copy of it, and a small JSON client for its API."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax

from genart_jax.studio import Studio
from genart_jax.studio.client import StudioClient
from genart_jax.studio.server import StudioServer
from genart_jax.train import train_and_evaluate
from tests.conftest import tiny_config

_TRAINED: dict[str, Path] = {}


def trained_gan(tmp_path_factory) -> Path:
    """A 4-step tiny DCGAN workdir, trained once per test session (never written by tests:
    copy it with `workdir_copy`)."""
    if "gan" not in _TRAINED:
        workdir = tmp_path_factory.mktemp("studio_gan")
        cfg = tiny_config("dcgan", **{"train.steps": "4", "train.sample_every": "0",
                                      "checkpoint.async_save": "False",
                                      "train.log_every": "2"})
        train_and_evaluate(cfg, workdir, progress=False, devices=jax.devices()[:1])
        _TRAINED["gan"] = workdir
    return _TRAINED["gan"]


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
