"""Document sync side effects: keep published security annotations honest as the text changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from server.features.commands import publish_annotations

if TYPE_CHECKING:
    from server.app import ProtegeServer


def register(ls: ProtegeServer) -> None:
    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_change(params: types.DidChangeTextDocumentParams) -> None:
        """LSP ``textDocument/didChange`` (incremental): drop annotations whose lines were edited away."""
        uri = params.text_document.uri
        findings = ls.annotations.get(uri)
        if not findings:
            return
        lines = ls.workspace.get_text_document(uri).lines
        kept = [f for f in findings
                if int(f.get("line", -1)) < len(lines) and f.get("code_line", "").strip()
                and f["code_line"].strip() in lines[int(f["line"])]]
        if len(kept) != len(findings):
            ls.annotations[uri] = kept
            publish_annotations(ls, uri)
