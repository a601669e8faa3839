"""``textDocument/completion``: the fallback for clients without inline completion (multi-line insert)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from server.features.inline_completion import annotation_command, run_completion

if TYPE_CHECKING:
    from server.app import ProtegeServer


def _label(text: str) -> str:
    first = text.strip().split("\n", 1)[0]
    return first if len(first) <= 60 else first[:57] + "..."


def register(ls: ProtegeServer) -> None:
    @ls.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(params: types.CompletionParams) -> types.CompletionList:
        """LSP ``textDocument/completion``."""
        uri = params.text_document.uri
        outcome = await run_completion(ls, uri, params.position)
        if outcome is None or not outcome.text:
            return types.CompletionList(is_incomplete=True, items=[])
        pos = params.position
        doc_md = f"```\n{outcome.text}\n```\n\n*Protege suggestion ({outcome.source}, {outcome.latency_ms:.0f} ms)*"
        screen = outcome.screen
        if screen is not None and getattr(screen, "verdict", "") == "annotate":
            doc_md += "\n\n**Security:** " + "; ".join(
                f"{f.test_id} ({f.severity}): {f.message}" for f in screen.findings)
        item = types.CompletionItem(
            label=_label(outcome.text),
            kind=types.CompletionItemKind.Snippet,
            detail="Protege" + (" · from " + ", ".join(f"{s['path']}:{s['line']}" for s in outcome.sources)
                                if outcome.sources else ""),
            data={"sources": outcome.sources} if outcome.sources else None,
            documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=doc_md),
            text_edit=types.TextEdit(range=types.Range(start=pos, end=pos), new_text=outcome.text),
            insert_text_format=types.InsertTextFormat.PlainText,
            filter_text=outcome.text.split("\n", 1)[0],
            sort_text="0",
            command=annotation_command(outcome, uri, pos),
        )
        # Incomplete: the next keystroke asks again, so the typed-ahead cache can answer it.
        return types.CompletionList(is_incomplete=True, items=[item])
