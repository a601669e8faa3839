"""`protege search` is answered by a running server when one has the workspace open (issue 18, item 7),
falls back to searching in process when none does, and the socket is the owner's only."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from rawlsp import ROOT, RawClient

from indexing.config import workspace_cache_dir
from indexing.search_socket import query, socket_path


def _search(ws: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "search", "scale factor", "--workspace", str(ws),
                           "--json", *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_search_is_served_by_the_running_server_then_falls_back(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "maths.py").write_text("def scale(value, factor):\n    \"\"\"Scale by a factor.\"\"\"\n"
                                         "    return value * factor\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    client = RawClient(env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        client.initialize({"memory": {"enabled": False}}, root=ws)
        client.request("idx", "workspace/executeCommand", {"command": "protege.indexWorkspace", "arguments": []})
        assert "error" not in client.wait_for("idx", timeout=300)
        sock = socket_path(workspace_cache_dir(ws))
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            client.drain(0.2)
        assert sock.exists(), client.stderr_tail()
        assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0  # the owner's only
        served = query(workspace_cache_dir(ws), "scale factor", 5)
        assert served and served[0]["path"] == "pkg/maths.py"
        # A malformed request gets an error reply; the socket keeps serving.
        import socket as _socket

        with _socket.socket(_socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b'{"k": "many"}\n')
            assert "error" in json.loads(s.makefile().readline())
        out = _search(ws)
        assert out.returncode == 0, out.stderr
        hits = [json.loads(line) for line in out.stdout.splitlines()]
        assert hits[0]["path"] == "pkg/maths.py" and hits[0]["symbol"] == "scale"
    finally:
        client.close()
    assert not sock.exists()  # removed at shutdown
    # No server: the CLI searches in process, lexically here (no embedding model to load).
    out = _search(ws, "--lexical")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["path"] == "pkg/maths.py"


def test_socket_refuses_a_second_server_and_replaces_a_stale_file(tmp_path: Path) -> None:
    from indexing.search_socket import SearchSocket

    calls: list[tuple[str, int, bool]] = []

    def search(q: str, k: int, vectors: bool) -> list[dict]:
        calls.append((q, k, vectors))
        return [{"path": "a.py", "start_line": 0, "symbol": "f", "kind": "function"}]

    path = socket_path(tmp_path)
    first = SearchSocket(path, search).start()
    try:
        assert query(tmp_path, "find f", 3, vectors=False) == [
            {"path": "a.py", "start_line": 0, "symbol": "f", "kind": "function"}]
        assert calls == [("find f", 3, False)]
        try:
            SearchSocket(path, search)
            raise AssertionError("a second server took over a live socket")
        except OSError as exc:
            assert "already answers" in str(exc)
    finally:
        first.close()
    assert not path.exists() and query(tmp_path, "x", 1) is None
    path.write_text("left by a server that was killed")  # stale: nothing listens
    second = SearchSocket(path, search).start()
    try:
        assert query(tmp_path, "again", 1) is not None
    finally:
        second.close()
