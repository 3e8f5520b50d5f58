"""A small JSON client for a running studio (scripts, the benchmarks, the tests): the same
HTTP API the page uses, with the token in a header."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class StudioClient:
    """`call(path, body)` -> (HTTP status, decoded JSON or raw bytes); POST when a body is given."""

    def __init__(self, base: str, token: str, timeout: float = 120.0):
        self.base, self.token, self.timeout = base.rstrip("/"), token, timeout

    @classmethod
    def of(cls, server: Any, token: str | None = None) -> StudioClient:
        """A client of an in-process `StudioServer` (with its token unless one is given)."""
        host, port = server.server_address[:2]
        return cls(f"http://{host}:{port}", server.token if token is None else token)

    def call(self, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, headers={
            "X-Studio-Token": self.token, "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                payload, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            payload, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        return status, (json.loads(payload) if "json" in ctype else payload)
