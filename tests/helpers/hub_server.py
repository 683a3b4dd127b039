"""A minimal loopback stand-in for the Hugging Face Hub file endpoint, for tests.

Serves ``/{org}/{name}/resolve/{revision}/{filename}`` (HEAD and GET) from local folders, with the
headers huggingface_hub needs (commit hash, ETag, size). Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class HubServer:
    """Serve ``repos[repo_id] = folder`` at ``self.endpoint`` until :meth:`close`."""

    def __init__(self, repos: dict[str, Path], revision_commit: str = "a" * 40) -> None:
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.commit = revision_commit
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _resolve(self) -> Path | str:
                """The file to serve, or the Hub's error code (``X-Error-Code``) for a 404."""
                parts = unquote(urlsplit(self.path).path).strip("/").split("/")
                server.requests.append(f"{self.command} {self.path}")
                if len(parts) < 5 or parts[2] != "resolve":
                    return "EntryNotFound"
                repo = "/".join(parts[:2])
                if repo not in server.repos:
                    return "RepoNotFound"
                if parts[3] not in ("main", server.commit):
                    return "RevisionNotFound"
                file = server.repos[repo] / "/".join(parts[4:])
                return file if file.is_file() else "EntryNotFound"

            def _headers(self, file: Path | str) -> None:
                if isinstance(file, str):
                    self.send_response(404)
                    self.send_header("X-Error-Code", file)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("X-Repo-Commit", server.commit)
                self.end_headers()

            def do_HEAD(self) -> None:
                self._headers(self._resolve())

            def do_GET(self) -> None:
                file = self._resolve()
                self._headers(file)
                if isinstance(file, Path):
                    self.wfile.write(file.read_bytes())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
