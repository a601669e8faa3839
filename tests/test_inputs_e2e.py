"""Paths and inputs through the real server (issue 18, item 6): a 50 MB document, binary text, documents
outside the workspace, non-file URIs, a non-UTF-8 file and a symlink out of the workspace. Each gets a
clear answer or is handled; nothing outside the workspace enters the index; the server keeps serving."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawlsp import RawClient

CODE = "import os\n\n\ndef join(a, b):\n    return os.path.join(a, b)\n\n\ndef base(p):\n    return \n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawClient, Path, Path]]:
    tmp = tmp_path_factory.mktemp("inputs")
    ws, outside = tmp / "ws", tmp / "outside"
    (ws / "pkg").mkdir(parents=True)
    outside.mkdir()
    (ws / "pkg" / "util.py").write_text(CODE)
    (ws / "pkg" / "latin1.py").write_bytes("# caf\xe9\nNAME = 'caf\xe9'\n".encode("latin-1"))
    (outside / "private.py").write_text("OUTSIDE_SECRET_MARKER = 1\n")
    (ws / "pkg" / "link.py").symlink_to(outside / "private.py")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    client = RawClient()
    client.initialize({"memory": {"enabled": False}}, root=ws)
    yield client, ws, outside
    assert client.close() == 0


def _open(client: RawClient, uri: str, text: str, language: str = "python") -> None:
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": language, "version": 1,
                                                            "text": text}})


def _complete(client: RawClient, id_: str, uri: str, line: int = 8, character: int = 11) -> dict:
    client.request(id_, "textDocument/inlineCompletion", {"textDocument": {"uri": uri},
                                                          "position": {"line": line, "character": character},
                                                          "context": {"triggerKind": 2}})
    return client.wait_for(id_, timeout=120)


def test_huge_and_binary_documents_get_clear_errors(served: tuple[RawClient, Path, Path]) -> None:
    client, ws, _ = served
    huge = (ws / "huge.py").as_uri()
    _open(client, huge, "x = 1\n" * (50 * 1024 * 1024 // 6))  # a 50 MB document
    err = _complete(client, "huge", huge)["error"]
    assert err["code"] == -32602 and "too large" in err["message"]
    client.notify("textDocument/didClose", {"textDocument": {"uri": huge}})
    binary = (ws / "blob.py").as_uri()
    _open(client, binary, "\x00\x01\x02" * 100 + "\n" + CODE)
    err = _complete(client, "bin", binary)["error"]
    assert err["code"] == -32602 and "binary" in err["message"]
    # Still serving.
    _open(client, (ws / "pkg" / "util.py").as_uri(), CODE)
    assert "error" not in _complete(client, "after", (ws / "pkg" / "util.py").as_uri())


def test_documents_outside_the_workspace_and_other_schemes_are_served(served: tuple[RawClient, Path, Path]) -> None:
    client, _, outside = served
    for i, uri in enumerate([(outside / "scratch.py").as_uri(), "untitled:Untitled-1"]):
        _open(client, uri, CODE)
        resp = _complete(client, f"elsewhere-{i}", uri)
        assert "error" not in resp, resp
    # A URI that no editor document or file backs is a clear error, not a crash.
    resp = _complete(client, "never-opened", "http://example.com/x.py")
    assert resp["error"]["code"] == -32602 and "didOpen" in resp["error"]["message"]


def test_index_holds_nothing_from_outside_and_reports_the_undecodable_file(
        served: tuple[RawClient, Path, Path]) -> None:
    client, ws, outside = served
    client.request("idx", "workspace/executeCommand", {"command": "protege.indexWorkspace", "arguments": []})
    assert "error" not in client.wait_for("idx", timeout=300)
    # Saving a file outside the workspace does not index it either.
    client.notify("textDocument/didSave", {"textDocument": {"uri": (outside / "private.py").as_uri()}})
    client.request("s", "workspace/executeCommand", {"command": "protege.search",
                                                     "arguments": [{"query": "OUTSIDE_SECRET_MARKER", "k": 10}]})
    hits = client.wait_for("s", timeout=120)["result"]
    text = str(hits)
    assert "OUTSIDE_SECRET_MARKER" not in text and "private.py" not in text and "link.py" not in text
    client.request("st", "workspace/executeCommand", {"command": "protege.status", "arguments": []})
    status = client.wait_for("st", timeout=60)["result"]
    assert status["index"]["files"] >= 1
    # The Latin-1 file is skipped with its reason, not indexed as mojibake.
    from indexing.api import RepoIndex

    with RepoIndex.open(ws) as idx:
        skipped = idx.skipped()
    assert any("latin1.py" in k and "UTF-8" in v for k, v in skipped.items()), skipped
