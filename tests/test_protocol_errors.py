"""Every malformed request gets its JSON-RPC error with its id; malformed notifications are dropped; the
server keeps serving (issue 18, item 1). Driven over real stdio with a raw client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rawlsp import RawClient

URI = "file:///tmp/protege-protocol-test/mod.py"
TEXT = "import os\n\n\ndef join(a, b):\n    return os.path.join(a, b)\n\n\ndef base(p):\n    return \n"
OPTIONS = {"memory": {"enabled": False}, "index": {"enabled": False}}


@pytest.fixture(scope="module")
def client() -> Iterator[RawClient]:
    c = RawClient()
    c.initialize(OPTIONS)
    yield c
    assert c.close() == 0


def _inline(line: object = 8, character: object = 11, context: object = "default") -> dict:
    params: dict = {"textDocument": {"uri": URI}, "position": {"line": line, "character": character}}
    if context == "default":
        params["context"] = {"triggerKind": 2}
    elif context is not None:
        params["context"] = context
    return params


def _completion_works(client: RawClient, id_: str) -> None:
    client.request(id_, "textDocument/inlineCompletion", _inline())
    resp = client.wait_for(id_, timeout=120)
    assert "error" not in resp, resp
    assert resp["result"] is None or isinstance(resp["result"], (dict, list))


def test_malformed_requests_are_answered_with_their_ids(client: RawClient) -> None:
    client.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                            "text": TEXT}})
    client.request("no-context", "textDocument/inlineCompletion", _inline(context=None))
    client.request("bad-line", "textDocument/inlineCompletion", _inline(line="x"))
    client.request("bad-doc", "textDocument/completion", {"textDocument": 5, "position": {"line": 0, "character": 0}})
    client.request("no-params", "textDocument/hover")
    client.request(41, "workspace/executeCommand", {"command": ["not", "a", "string"]})
    client.request("unknown", "protege/noSuchMethod", {})
    for id_, code in (("no-context", -32602), ("bad-line", -32602), ("bad-doc", -32602), ("no-params", -32602),
                      (41, -32602), ("unknown", -32601)):
        resp = client.wait_for(id_, timeout=30)
        assert resp.get("error", {}).get("code") == code, resp
        assert "result" not in resp
    detail = client.responses["no-context"]["error"]["message"]
    assert "textDocument/inlineCompletion" in detail and "context" in detail
    _completion_works(client, "after-bad-params")


def test_wrong_json_rpc_shapes_get_invalid_request_or_parse_error(client: RawClient) -> None:
    client.send_obj({"id": "no-version", "method": "textDocument/hover", "params": {}})
    client.send_obj({"jsonrpc": "1.0", "id": "old-version", "method": "shutdown"})
    before = len(client.null_id_errors)
    client.send_obj([{"jsonrpc": "2.0", "id": 1, "method": "shutdown"}])  # a batch: LSP has none
    client.send_obj(42)
    client.send_bytes(b'{"jsonrpc": "2.0", "id": 7, "method": ')  # not JSON
    client.send_bytes(b"\xff\xfe not utf-8 \x00")
    for id_ in ("no-version", "old-version"):
        assert client.wait_for(id_, timeout=30)["error"]["code"] == -32600
    errors = client.wait_null_errors(before + 4)[before:]
    assert sorted(e["error"]["code"] for e in errors) == [-32700, -32700, -32600, -32600]
    _completion_works(client, "after-bad-shapes")


def test_malformed_notifications_are_dropped_and_serving_goes_on(client: RawClient) -> None:
    client.notify("textDocument/didOpen", {"textDocument": {"uri": 3}})
    client.notify("textDocument/didChange", {"contentChanges": "nope"})
    client.notify("$/cancelRequest", {"id": {"nested": True}})
    client.notify("protege/unknownNotification", {"x": 1})
    client.drain(1.0)
    assert client.proc.poll() is None
    answered = [m for m in client.other if isinstance(m, dict) and m.get("id") is not None]
    assert not answered  # notifications are never answered
    _completion_works(client, "after-bad-notifications")
