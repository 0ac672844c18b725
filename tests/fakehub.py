"""A Hugging Face hub stand-in on 127.0.0.1 for download tests (never the real hub)."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    """Serves ``/{repo}/resolve/{revision}/{file}`` for the files it is given."""

    def __init__(self, commit: str = "a" * 40) -> None:
        self.commit = commit
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _lookup(self) -> bytes | None:
                hub.requests.append(f"{self.command} {self.path}")
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                repo, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if rev not in (hub.commit, "main"):
                    return None
                return hub.files.get((repo, name))

            def _headers(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def _missing(self) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                body = self._lookup()
                self._missing() if body is None else self._headers(body)

            def do_GET(self) -> None:
                body = self._lookup()
                if body is None:
                    self._missing()
                    return
                self._headers(body)
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: str, name: str, path: Path) -> None:
        self.files[(repo, name)] = path.read_bytes()

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
