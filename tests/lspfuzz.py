"""A seeded LSP protocol fuzzer: valid, mutated and malformed messages for every method the server
registers, random positions, huge and binary documents, out-of-order open/change/close, cancellations
and bursts of concurrent requests. Used by tests/test_fuzz.py (short) and bench/bench_fuzz.py (10,000).

After each batch a normal completion must still work. Counted: crashes (the server exits), requests
left unanswered (no response within the deadline), hung workers (the canary completion times out).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from rawlsp import RawClient

REQUESTS = ("textDocument/inlineCompletion", "textDocument/completion", "textDocument/hover",
            "textDocument/codeAction", "textDocument/codeLens", "workspace/executeCommand")
NOTIFICATIONS = ("textDocument/didOpen", "textDocument/didChange", "textDocument/didClose", "textDocument/didSave",
                 "workspace/didChangeConfiguration", "workspace/didChangeWatchedFiles", "$/cancelRequest",
                 "$/setTrace")
COMMANDS = ("protege.status", "protege.explain", "protege.explainFinding", "protege.search",
            "protege.suggestionAccepted", "protege.indexWorkspace")
CODE = ("import os\n\n\ndef join(a, b):\n    return os.path.join(a, b)\n\n\n"
        "class Store:\n    def __init__(self, path):\n        self.path = path\n\n    def read(self):\n"
        "        with open(self.path) as fh:\n            return fh.read()\n")
_WEIRD = [None, True, -1, 2**31, 2**63, 1.5, "", "x" * 300, [], {}, [1, "a"], {"a": {"b": [None]}}, "\x00\ud7ff"]


@dataclass
class Tally:
    sent: int = 0
    requests: int = 0
    answered: int = 0
    errors_by_code: dict[int, int] = field(default_factory=dict)
    unanswered: list[Any] = field(default_factory=list)
    crashes: int = 0
    hung: int = 0
    canaries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    internal_errors: list[str] = field(default_factory=list)  # "method: message" of -32603 answers
    error_popups: list[str] = field(default_factory=list)  # "Error in server: ..." shown to the user

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "requests": self.requests, "answered": self.answered,
                "errors_by_code": {str(k): v for k, v in sorted(self.errors_by_code.items())},
                "unanswered": len(self.unanswered), "unanswered_ids": self.unanswered[:10],
                "crashes": self.crashes, "hung_workers": self.hung, "canary_completions": self.canaries,
                "kinds": dict(sorted(self.kinds.items())), "internal_errors": self.internal_errors[:20],
                "internal_error_count": len(self.internal_errors), "error_popups": self.error_popups[:20]}


class Fuzzer:
    def __init__(self, seed: int, huge_bytes: int = 2_000_000) -> None:
        self.rng = random.Random(seed)
        self.huge_bytes = huge_bytes
        self.docs: dict[str, int] = {}  # uri -> version
        self.next_id = 0
        self.pending: list[Any] = []

    # -- building blocks ------------------------------------------------------------------
    def uri(self) -> str:
        r = self.rng.random()
        if r < 0.7 and self.docs:
            return self.rng.choice(sorted(self.docs))
        if r < 0.85:
            return f"file:///tmp/fuzz/m{self.rng.randrange(6)}.py"
        return self.rng.choice(["untitled:Untitled-1", "http://example.com/x.py", "file://", "not a uri",
                                "file:///etc/passwd", "file:///tmp/fuzz/../../etc/shadow", "vscode-notebook-cell:x#1"])

    def position(self) -> dict[str, Any]:
        r = self.rng.random()
        if r < 0.6:
            return {"line": self.rng.randrange(16), "character": self.rng.randrange(30)}
        if r < 0.85:
            return {"line": self.rng.choice([-1, 0, 10**6, 2**31 - 1]), "character": self.rng.choice([-5, 0, 10**7])}
        return {"line": self.rng.choice(_WEIRD), "character": self.rng.choice(_WEIRD)}

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return CODE
        if r < 0.75:
            return "".join(chr(self.rng.randrange(0, 0x2FF)) for _ in range(self.rng.randrange(1, 400)))
        if r < 0.85:
            return bytes(self.rng.randrange(256) for _ in range(300)).decode("latin-1")  # binary, NULs included
        if r < 0.92:
            return ("x = 1\n" * (self.huge_bytes // 6))  # a huge document
        return ""

    def mutate(self, obj: Any, depth: int = 0) -> Any:
        if isinstance(obj, dict) and obj and depth < 4:
            out = dict(obj)
            key = self.rng.choice(sorted(out))
            r = self.rng.random()
            if r < 0.3:
                del out[key]
            elif r < 0.6:
                out[key] = self.rng.choice(_WEIRD)
            elif r < 0.7:
                out["extra" + str(self.rng.randrange(9))] = self.rng.choice(_WEIRD)
            else:
                out[key] = self.mutate(out[key], depth + 1)
            return out
        if isinstance(obj, list) and obj:
            return [self.mutate(x, depth + 1) for x in obj]
        return self.rng.choice(_WEIRD)

    # -- messages ---------------------------------------------------------------------------
    def request_params(self, method: str) -> Any:
        td = {"uri": self.uri()}
        if method == "textDocument/inlineCompletion":
            return {"textDocument": td, "position": self.position(),
                    "context": {"triggerKind": self.rng.choice([1, 2]),
                                **({"selectedCompletionInfo": {"range": {"start": self.position(), "end": self.position()},
                                                               "text": "jo"}} if self.rng.random() < 0.1 else {})}}
        if method in ("textDocument/completion", "textDocument/hover"):
            return {"textDocument": td, "position": self.position()}
        if method == "textDocument/codeAction":
            return {"textDocument": td, "range": {"start": self.position(), "end": self.position()},
                    "context": {"diagnostics": []}}
        if method == "textDocument/codeLens":
            return {"textDocument": td}
        command = self.rng.choice(COMMANDS)
        args: list[Any] = []
        if command in ("protege.explain", "protege.explainFinding"):
            args = [{"uri": td["uri"], "range": {"start": self.position(), "end": self.position()}}]
        elif command == "protege.search":
            args = [self.rng.choice(["join paths", "", "x" * 5000, "read file"])]
        elif command == "protege.suggestionAccepted":
            args = [{"uri": td["uri"], "sources": []}]
        if self.rng.random() < 0.3:
            args = self.mutate(args) if args else [self.rng.choice(_WEIRD)]
        return {"command": command, "arguments": args}

    def notification_params(self, method: str) -> Any:
        if method == "textDocument/didOpen":
            uri = f"file:///tmp/fuzz/m{self.rng.randrange(6)}.py" if self.rng.random() < 0.8 else self.uri()
            self.docs[uri] = 1
            return {"textDocument": {"uri": uri, "languageId": self.rng.choice(["python", "javascript", "rust", ""]),
                                     "version": 1, "text": self.text()}}
        if method == "textDocument/didChange":
            uri = self.uri()
            v = self.docs.get(uri, 0) + 1
            if uri in self.docs:
                self.docs[uri] = v
            change: dict[str, Any] = {"text": self.rng.choice(["", "x", "def f():\n    return 1\n", "\x00"])}
            if self.rng.random() < 0.7:
                change["range"] = {"start": self.position(), "end": self.position()}
            return {"textDocument": {"uri": uri, "version": v}, "contentChanges": [change]}
        if method == "textDocument/didClose":
            uri = self.uri()
            self.docs.pop(uri, None)
            return {"textDocument": {"uri": uri}}
        if method == "textDocument/didSave":
            return {"textDocument": {"uri": self.uri()}, **({"text": CODE} if self.rng.random() < 0.5 else {})}
        if method == "workspace/didChangeConfiguration":
            return {"settings": self.rng.choice([{}, {"protege": {"maxTokens": self.rng.choice([1, 64, -3, "x"])}},
                                                 {"protege": {"screening": {"policy": {"blockSeverity": "BAD"}}}},
                                                 None, [1]])}
        if method == "workspace/didChangeWatchedFiles":
            return {"changes": [{"uri": self.uri(), "type": self.rng.choice([1, 2, 3, 9])}]}
        if method == "$/cancelRequest":
            target = self.rng.choice(self.pending) if self.pending and self.rng.random() < 0.8 else self.rng.randrange(99)
            return {"id": target}
        return {"value": self.rng.choice(["off", "messages", "verbose", "nonsense"])}

    def new_id(self) -> Any:
        self.next_id += 1
        return self.next_id if self.rng.random() < 0.7 else f"f{self.next_id}"

    def message(self) -> tuple[str, bytes, Any]:
        """(kind, framed body, request id or None)."""
        r = self.rng.random()
        if r < 0.40:
            method = self.rng.choice(REQUESTS)
            params = self.request_params(method)
            kind = "valid-request"
            if self.rng.random() < 0.35:
                params, kind = self.mutate(params), "mutated-request"
            id_ = self.new_id()
            return kind, json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}).encode(), id_
        if r < 0.80:
            method = self.rng.choice(NOTIFICATIONS)
            params = self.notification_params(method)
            kind = "notification"
            if self.rng.random() < 0.25:
                params, kind = self.mutate(params), "mutated-notification"
            return kind, json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode(), None
        if r < 0.88:
            id_ = self.new_id()
            method = self.rng.choice(["protege/none", "textDocument/definition", "", "initialize", "$/ping"])
            return "unknown-method", json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": {}}).encode(), id_
        id_ = self.new_id()
        shape = self.rng.randrange(5)
        if shape == 0:
            return "no-jsonrpc", json.dumps({"id": id_, "method": "textDocument/hover", "params": {}}).encode(), id_
        if shape == 1:
            return "bad-version", json.dumps({"jsonrpc": "3.0", "id": id_, "method": "shutdown"}).encode(), id_
        if shape == 2:
            return "not-json", b'{"jsonrpc": "2.0", "id": ' + str(id_).encode() + b', "method": "x", ', None
        if shape == 3:
            return "bare-value", json.dumps(self.rng.choice([1, "s", None, [1, 2]])).encode(), None
        return "bad-id", json.dumps({"jsonrpc": "2.0", "id": {"x": 1}, "method": "textDocument/hover",
                                     "params": {}}).encode(), None


def canary(client: RawClient, tag: str, timeout: float = 120.0) -> bool:
    """A normal completion on a freshly opened document still works."""
    uri = f"file:///tmp/fuzz/canary-{tag}.py"
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                            "text": CODE}})
    client.request(f"canary-{tag}", "textDocument/inlineCompletion",
                   {"textDocument": {"uri": uri}, "position": {"line": 4, "character": 11},
                    "context": {"triggerKind": 2}})
    try:
        resp = client.wait_for(f"canary-{tag}", timeout=timeout)
    except TimeoutError:
        return False
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    return "error" not in resp


def run(client: RawClient, seed: int, messages: int, batch: int = 250, deadline_s: float = 120.0,
        huge_bytes: int = 2_000_000) -> Tally:
    fz = Fuzzer(seed, huge_bytes)
    tally = Tally()
    sent = 0
    while sent < messages:
        ids: list[Any] = []
        methods: dict[Any, str] = {}
        for _ in range(min(batch, messages - sent)):
            kind, body, id_ = fz.message()
            if id_ is not None:
                try:
                    methods[id_] = json.loads(body).get("method", "?")
                except (ValueError, AttributeError):
                    methods[id_] = "?"
            tally.kinds[kind] = tally.kinds.get(kind, 0) + 1
            client.send_bytes(body)
            sent += 1
            if id_ is not None:
                ids.append(id_)
                fz.pending = ids[-8:]
        tally.sent = sent
        tally.requests += len(ids)
        end = time.monotonic() + deadline_s
        for id_ in ids:
            try:
                resp = client.wait_for(id_, timeout=max(1.0, end - time.monotonic()))
            except TimeoutError:
                if client.proc.poll() is not None:
                    tally.crashes += 1
                    return tally
                tally.unanswered.append(id_)
                continue
            tally.answered += 1
            if "error" in resp:
                code = resp["error"].get("code", 0)
                tally.errors_by_code[code] = tally.errors_by_code.get(code, 0) + 1
                if code == -32603:
                    tally.internal_errors.append(f"{methods.get(id_)}: {resp['error'].get('message', '')[:160]}")
        if client.proc.poll() is not None:
            tally.crashes += 1
            return tally
        if canary(client, str(sent)):
            tally.canaries += 1
        else:
            tally.hung += 1
    tally.error_popups = [m["params"]["message"] for m in client.other
                          if isinstance(m, dict) and m.get("method") == "window/showMessage"
                          and "Error in server" in str(m.get("params", {}).get("message", ""))]
    return tally
