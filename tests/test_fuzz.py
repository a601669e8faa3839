"""A short seeded run of the protocol fuzzer (tests/lspfuzz.py; bench/bench_fuzz.py runs 10,000 messages):
no crash, every request answered, a normal completion still works after every batch."""

from __future__ import annotations

import lspfuzz
from rawlsp import RawClient


def test_seeded_fuzz_run_answers_everything_and_keeps_serving() -> None:
    client = RawClient()
    try:
        client.initialize({"memory": {"enabled": False}})
        tally = lspfuzz.run(client, seed=20261202, messages=400, batch=100, huge_bytes=200_000)
    finally:
        code = client.close()
    summary = tally.to_dict()
    assert summary["crashes"] == 0 and code == 0, client.stderr_tail()
    assert summary["unanswered"] == 0, summary
    assert summary["hung_workers"] == 0 and summary["canary_completions"] == 4, summary
    assert summary["requests"] >= 150 and summary["answered"] == summary["requests"]
    # The run covered every kind of message it claims to.
    assert {"valid-request", "mutated-request", "notification", "mutated-notification", "unknown-method",
            "no-jsonrpc", "bad-version", "not-json"} <= set(summary["kinds"])
    # Bad input is a clear error, never an internal one, and never an "Error in server" popup.
    assert summary["internal_error_count"] == 0, summary["internal_errors"]
    assert not summary["error_popups"], summary["error_popups"]
    # Malformed requests were answered as such, not with results.
    assert summary["errors_by_code"].get("-32602", 0) > 0 and summary["errors_by_code"].get("-32601", 0) > 0
