"""`protege search` served by a running `protege serve` (issue 18, item 7).

A server that has a workspace's index open (embedder warm) listens on a Unix-domain socket in that
index's cache directory, mode 0600; `protege search` tries it first and falls back to searching in
process. One request per connection, one JSON line each way:
``{"query": str, "k": int, "vectors": bool}`` -> ``{"hits": [SearchHit as a dict, ...]}`` or
``{"error": str}``. A Unix socket is not a network connection: nothing leaves the machine, and only
the user who owns the cache directory can connect.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_NAME = "search.sock"
MAX_REQUEST_BYTES = 64 * 1024
MAX_K = 200


def socket_path(cache_dir: Path) -> Path:
    return cache_dir / SOCKET_NAME


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: SearchSocket = self.server  # type: ignore[assignment]
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
            req = json.loads(line)
            query, k = req["query"], int(req.get("k", 10))
            if not isinstance(query, str) or not 1 <= k <= MAX_K:
                raise ValueError(f"expected a string query and 1 <= k <= {MAX_K}")
            reply: dict[str, Any] = {"hits": server.search(query, k, bool(req.get("vectors", True)))}
        except Exception as exc:  # noqa: BLE001 - a bad request gets an answer, the server goes on
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            self.wfile.write((json.dumps(reply) + "\n").encode("utf-8"))
        except OSError:
            pass  # the client went away


class SearchSocket(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, search: Callable[[str, int, bool], list[dict[str, Any]]]) -> None:
        self.path = path
        self.search = search
        if path.exists() or path.is_symlink():
            if _alive(path):
                raise OSError(f"another server already answers searches at {path}")
            path.unlink()  # left by a server that died
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        self._thread: threading.Thread | None = None

    def start(self) -> SearchSocket:
        self._thread = threading.Thread(target=self.serve_forever, name="protege-search-socket", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            self.path.unlink()
        except OSError:
            pass


def _alive(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            s.connect(str(path))
        return True
    except OSError:
        return False


def query(cache_dir: Path, text: str, k: int, vectors: bool = True,
          timeout_s: float = 10.0) -> list[dict[str, Any]] | None:
    """Ask a running server; None when none answers (the caller searches in process)."""
    path = socket_path(cache_dir)
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(path))
            s.sendall((json.dumps({"query": text, "k": k, "vectors": vectors}) + "\n").encode("utf-8"))
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        log.info("no server answered at %s (%s); searching in process", path, exc)
        return None
    reply = json.loads(data)
    if "error" in reply:
        raise RuntimeError(f"the running server could not search: {reply['error']}")
    hits = reply["hits"]
    return hits if isinstance(hits, list) else None
