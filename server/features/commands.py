"""``workspace/executeCommand``: status, and publishing findings of accepted annotated suggestions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

if TYPE_CHECKING:
    from server.app import ProtegeServer

_SEVERITY = {"HIGH": types.DiagnosticSeverity.Error, "MEDIUM": types.DiagnosticSeverity.Warning,
             "LOW": types.DiagnosticSeverity.Information}


def finding_diagnostic(f: dict[str, Any]) -> types.Diagnostic:
    """An LSP diagnostic for one security finding (test id as code, CWE in the message)."""
    cwe = f"CWE-{f['cwe']}: " if f.get("cwe") else ""
    line, end_line = int(f.get("line", 0)), int(f.get("end_line", f.get("line", 0)))
    return types.Diagnostic(
        range=types.Range(start=types.Position(line=line, character=int(f.get("col", 0))),
                          end=types.Position(line=end_line, character=int(f.get("end_col", 0)) or 10_000)),
        severity=_SEVERITY.get(str(f.get("severity", "")).upper(), types.DiagnosticSeverity.Warning),
        code=f.get("test_id"),
        source="protege-security",
        message=f"{cwe}{f.get('message', '')} (severity {f.get('severity')}, confidence {f.get('confidence')})",
        data=f,
    )


def publish_annotations(ls: ProtegeServer, uri: str) -> None:
    diags = [finding_diagnostic(f) for f in ls.annotations.get(uri, [])]
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diags))


def register(ls: ProtegeServer) -> None:
    @ls.command("protege.status")
    def status(*args: Any) -> dict[str, Any]:
        """``protege.status``: model, engine, cache, screening and index state."""
        return ls.status()

    @ls.command("protege.suggestionAccepted")
    def accepted(*args: Any) -> None:
        """Run by the client when an annotated suggestion is accepted: show its findings."""
        if not args or not isinstance(args[0], dict) or "uri" not in args[0]:
            raise JsonRpcInvalidParams("protege.suggestionAccepted expects one object with 'uri' and 'findings'")
        info = args[0]
        findings = [dict(f) for f in info.get("findings", []) if isinstance(f, dict)]
        try:
            lines = ls.workspace.get_text_document(info["uri"]).lines
        except Exception:
            lines = []
        for f in findings:
            # Remember the flagged line's text so edits that remove it also remove the diagnostic.
            n = int(f.get("line", -1))
            f["code_line"] = lines[n].rstrip("\r\n") if 0 <= n < len(lines) else ""
        if isinstance(info.get("sources"), list) and info["sources"]:
            ls.counters["acceptedFromMemory"] = ls.counters.get("acceptedFromMemory", 0) + 1
        if findings:
            ls.annotations.setdefault(info["uri"], []).extend(findings)
            publish_annotations(ls, info["uri"])
