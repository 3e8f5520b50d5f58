"""Shared by the studio tests: one tiny trained GAN per test session, a running studio on a
copy of it, and a small JSON client for its API."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import jax

from genart_jax.studio import Studio
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


class Client:
    """JSON calls to a studio; `call` returns (status, decoded body)."""

    def __init__(self, server: StudioServer, token: str | None = None):
        host, port = server.server_address[:2]
        self.base, self.token = f"http://{host}:{port}", server.token if token is None else token

    def call(self, path: str, body=None, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, headers={
            "X-Studio-Token": self.token, "Content-Type": "application/json",
            **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                payload = r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            payload, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        return status, (json.loads(payload) if "json" in ctype else payload)
