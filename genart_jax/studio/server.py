"""The studio's HTTP server: the standard library's ThreadingHTTPServer (no dependency, nothing
to download, a few routes), a random token required on every request, the package's own assets
and only files under the workdir.

Routes: GET / (the page), /static/NAME (its assets), /files/PATH (a file under the workdir),
/api/state, /api/run, /api/job; POST /api/round, /api/rate, /api/history, /api/explore,
/api/walk, /api/finetune with a JSON body. Errors are JSON {"error": message} with a 4xx."""

from __future__ import annotations

import hmac
import json
import mimetypes
import secrets
import sys
import threading
import traceback
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from genart_jax.feedback import FeedbackError
from genart_jax.studio.app import Studio, StudioConflict, StudioError, dumps
from genart_jax.studio.controls import ControlError

ASSETS = ("index.html", "studio.js", "studio.css")
MAX_BODY = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")
POSTS = {"/api/round": "round_", "/api/rate": "rate", "/api/history": "history_round",
         "/api/explore": "explore", "/api/walk": "walk", "/api/finetune": "finetune"}


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def asset(name: str) -> bytes:
    """A page asset from the package (a fixed list: no path from the request is opened)."""
    return resources.files("genart_jax.studio").joinpath("assets", name).read_bytes()


def safe_file(root: Path, rel: str) -> Path:
    """The file `rel` under `root`, or an HttpError: absolute paths, '..', and links that
    lead outside the workdir are refused."""
    rel = urllib.parse.unquote(rel)
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\x00" in rel:
        raise HttpError(HTTPStatus.FORBIDDEN, f"only files under the workdir are served: {rel!r}")
    base = root.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base):
        raise HttpError(HTTPStatus.FORBIDDEN, f"{rel!r} leads outside the workdir")
    if not path.is_file():
        raise HttpError(HTTPStatus.NOT_FOUND, f"no file {rel!r} in the workdir")
    return path


class StudioServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None):
        self.studio = studio
        self.token = token or secrets.token_urlsafe(24)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/?token={self.token}"

    def start(self) -> threading.Thread:
        """Serve in a background thread (tests, notebooks); `shutdown()` stops it."""
        t = threading.Thread(target=self.serve_forever, daemon=True)
        t.start()
        return t


class Handler(BaseHTTPRequestHandler):
    server: StudioServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        if not self.path.startswith("/api/job"):
            sys.stderr.write(f"studio: {self.command} {self.path.split('?')[0]} "
                             f"{args[1] if len(args) > 1 else ''}\n")

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        self._serve(self._get)

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        self._serve(self._post)

    # --- dispatch

    def _serve(self, route) -> None:
        try:
            url = urllib.parse.urlsplit(self.path)
            self._check_token(url)
            status, ctype, body = route(url)
        except HttpError as e:
            status, ctype, body = e.status, "application/json", dumps({"error": str(e)})
        except StudioConflict as e:
            status, ctype, body = HTTPStatus.CONFLICT, "application/json", dumps({"error": str(e)})
        except (StudioError, ControlError, FeedbackError) as e:
            status, ctype, body = (HTTPStatus.BAD_REQUEST, "application/json",
                                   dumps({"error": str(e)}))
        except Exception as e:  # noqa: BLE001 - a bug: say so, keep serving
            traceback.print_exc()
            status, ctype, body = (HTTPStatus.INTERNAL_SERVER_ERROR, "application/json",
                                   dumps({"error": f"{type(e).__name__}: {e}"}))
        if self.command == "POST" and status >= 400:
            self.close_connection = True  # an unread body must not become the next request
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)

    def _check_token(self, url: urllib.parse.SplitResult) -> None:
        given = self.headers.get("X-Studio-Token") or \
            urllib.parse.parse_qs(url.query).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            raise HttpError(HTTPStatus.FORBIDDEN, "missing or wrong token: open the URL "
                            "`genart studio` printed (it ends in ?token=...)")

    def _get(self, url: urllib.parse.SplitResult) -> tuple[int, str, bytes]:
        studio, path = self.server.studio, url.path
        if path in ("/", "/index.html"):
            page = asset("index.html").replace(b"{{TOKEN}}", self.server.token.encode())
            return HTTPStatus.OK, "text/html; charset=utf-8", page
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in ASSETS:
                raise HttpError(HTTPStatus.NOT_FOUND, f"no asset {name!r}")
            return HTTPStatus.OK, mimetypes.guess_type(name)[0] or "text/plain", asset(name)
        if path.startswith("/files/"):
            f = safe_file(studio.workdir, path.removeprefix("/files/"))
            return HTTPStatus.OK, mimetypes.guess_type(f.name)[0] or "application/octet-stream", \
                f.read_bytes()
        api = {"/api/state": studio.state, "/api/run": studio.run, "/api/job": studio.job_state}
        if path in api:
            return HTTPStatus.OK, "application/json", dumps(api[path]())
        raise HttpError(HTTPStatus.NOT_FOUND, f"no route {path!r}")

    def _post(self, url: urllib.parse.SplitResult) -> tuple[int, str, bytes]:
        name = POSTS.get(url.path)
        if name is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no route {url.path!r}")
        data = self._json_body()
        studio = self.server.studio
        call = studio.current_round if name == "round_" else getattr(studio, name)
        if name == "round_":
            data = data.get("controls") if isinstance(data, dict) else None
        return HTTPStatus.OK, "application/json", dumps(call(data))

    def _json_body(self) -> Any:
        try:
            size = int(self.headers.get("Content-Length", "0"))
        except ValueError as e:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from e
        if size > MAX_BODY or size < 0:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(size) if size else b"{}"
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"the body must be JSON: {e}") from e


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 8765) -> StudioServer:
    """A bound server for `studio` (call serve_forever() or start()); warns off loopback."""
    if host not in LOOPBACK:
        print(f"genart studio: WARNING: listening on {host}, not 127.0.0.1: anyone who can "
              f"reach this port and has the token can rate and fine-tune", file=sys.stderr)
    return StudioServer(studio, host, port)
