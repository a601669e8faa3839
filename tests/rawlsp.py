"""A raw LSP client over stdio: sends any bytes (malformed on purpose), reads every framed reply.

pytest-lsp's client validates what it sends, so it cannot send what a buggy or hostile client would;
this one frames whatever it is given and collects the server's messages on a reader thread.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class RawClient:
    def __init__(self, args: list[str] | None = None, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        cmd = [sys.executable, "-m", "server.cli", *(args or []), "serve", "--stdio"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=str(cwd or ROOT), env={**os.environ, **(env or {})})
        self.messages: queue.Queue[dict[str, Any] | list[Any]] = queue.Queue()
        self.responses: dict[Any, dict[str, Any]] = {}
        self.null_id_errors: list[dict[str, Any]] = []
        self.other: list[Any] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)
            if len(self._stderr) > 2000:
                del self._stderr[:1000]

    def stderr_tail(self, n: int = 40) -> str:
        return b"".join(self._stderr[-n:]).decode("utf-8", "replace")

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1].strip())
            if length is None:
                continue
            body = out.read(length)
            msg = json.loads(body)
            self.messages.put(msg)

    def _pump(self, timeout: float) -> bool:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return False
        if isinstance(msg, dict) and "id" in msg and ("result" in msg or "error" in msg):
            if msg["id"] is None:
                self.null_id_errors.append(msg)
            else:
                self.responses[msg["id"]] = msg
        elif isinstance(msg, dict) and "method" in msg and "id" in msg:
            # A request from the server (registerCapability, workDoneProgress/create...): accept it.
            self.send_obj({"jsonrpc": "2.0", "id": msg["id"], "result": None})
        else:
            self.other.append(msg)
        return True

    def send_bytes(self, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send_obj(self, obj: Any) -> None:
        self.send_bytes(json.dumps(obj).encode("utf-8"))

    def request(self, id_: Any, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
        if params is not None:
            msg["params"] = params
        self.send_obj(msg)

    def notify(self, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send_obj(msg)

    def wait_for(self, id_: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while id_ not in self.responses:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"no response to request {id_!r} (server {'exited' if self.proc.poll() is not None else 'alive'})\n"
                                   + self.stderr_tail())
            self._pump(min(left, 0.5))
        return self.responses[id_]

    def wait_null_errors(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.null_id_errors) < n and time.monotonic() < deadline:
            self._pump(0.2)
        return self.null_id_errors

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._pump(0.05)

    def initialize(self, options: dict[str, Any] | None = None, root: Path | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"processId": os.getpid(), "capabilities": {},
                                  "initializationOptions": options or {}}
        if root is not None:
            params["rootUri"] = root.as_uri()
            params["workspaceFolders"] = [{"uri": root.as_uri(), "name": root.name}]
        else:
            params["rootUri"] = None
        self.request("init", "initialize", params)
        resp = self.wait_for("init", timeout=120)
        self.notify("initialized", {})
        return resp

    def close(self) -> int | None:
        try:
            if self.proc.poll() is None:
                self.request("bye", "shutdown")
                try:
                    self.wait_for("bye", timeout=20)
                except TimeoutError:
                    pass
                self.notify("exit")
                self.proc.wait(timeout=20)
        except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
            self.proc.kill()
        return self.proc.returncode
