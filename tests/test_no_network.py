"""Offline by default (issue 18, item 5): the server opens no network socket of its own while it completes,
indexes and searches a workspace; with --tcp, its listener (and the editor's connection) are the only ones.

Sockets are read from /proc: every ``socket:[inode]`` among the process's (and its children's) file
descriptors, matched against /proc/net/{tcp,tcp6,udp,udp6}. Unix-domain sockets are not network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rawlsp import ROOT, RawClient

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return sorted(set(out))


def inet_sockets(pid: int) -> list[dict[str, str]]:
    """(proto, local, remote, state) of every TCP/UDP socket the process tree holds."""
    inodes: set[str] = set()
    for p in _descendants(pid):
        for fd in Path(f"/proc/{p}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                found.append({"proto": proto, "local": cols[1], "remote": cols[2], "state": cols[3]})
    return found


def _port(hex_addr: str) -> int:
    return int(hex_addr.rsplit(":", 1)[1], 16)


def _workspace(tmp: Path) -> Path:
    ws = tmp / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "util.py").write_text("import os\n\n\ndef join(a, b):\n    return os.path.join(a, b)\n")
    (ws / "pkg" / "store.py").write_text("from pkg.util import join\n\n\ndef path_for(root, name):\n"
                                         "    return join(root, name)\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    return ws


def test_stdio_server_opens_no_network_socket(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    client = RawClient()
    try:
        client.initialize({}, root=ws)
        uri = (ws / "pkg" / "store.py").as_uri()
        text = (ws / "pkg" / "store.py").read_text()
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": text + "\n\ndef other(root):\n    return "}})
        client.request("c1", "textDocument/inlineCompletion",
                       {"textDocument": {"uri": uri}, "position": {"line": 7, "character": 11},
                        "context": {"triggerKind": 2}})
        assert "error" not in client.wait_for("c1", timeout=120)
        client.request("idx", "workspace/executeCommand", {"command": "protege.indexWorkspace", "arguments": []})
        client.wait_for("idx", timeout=300)
        client.request("s1", "workspace/executeCommand", {"command": "protege.search",
                                                          "arguments": [{"query": "join paths", "k": 3}]})
        client.wait_for("s1", timeout=120)
        client.drain(1.0)
        sockets = inet_sockets(client.proc.pid)
    finally:
        client.close()
    assert sockets == [], sockets


def test_tcp_server_holds_only_its_listener_and_the_editor_connection(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--tcp", f"127.0.0.1:{port}"],
                            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        conn = None
        while conn is None and time.monotonic() < deadline:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                time.sleep(0.2)
        assert conn is not None, "the --tcp server never listened"
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"processId": None, "capabilities": {}, "rootUri": None,
                                      "initializationOptions": {"memory": {"enabled": False}}}}).encode()
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        conn.settimeout(120)
        reply = b""
        while b'"id": 1' not in reply and b'"id":1' not in reply:
            chunk = conn.recv(65536)
            assert chunk, "the --tcp server closed the connection before answering initialize"
            reply += chunk
        sockets = inet_sockets(proc.pid)
        conn.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    ports = {_port(s["local"]) for s in sockets}
    assert ports == {port}, sockets  # the listener and the accepted connection, both on our port
    assert all(s["proto"].startswith("tcp") for s in sockets)
