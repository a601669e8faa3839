"""``textDocument/codeAction`` for security findings: explain a finding and offer its safe idiom.

Works on the diagnostics the server publishes for accepted annotated suggestions (source
``protege-security``, code = the test id such as B602, SECRET or JS004). For each one it offers
"Explain" (a ``window/showMessage`` with the explanation and CWE, through the
``protege.explainFinding`` command) and, where a safer idiom exists, a quick fix that inserts it
as a comment above the flagged line: the idiom names other variables, so rewriting the user's
code in place would be a guess.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from security.advice import advice_for

if TYPE_CHECKING:
    from server.app import ProtegeServer

SOURCE = "protege-security"
EXPLAIN_COMMAND = "protege.explainFinding"
# Comment leaders by LSP language id; the idiom goes in as a comment in the file's own syntax.
_COMMENT = {"python": "#", "javascript": "//", "typescript": "//", "javascriptreact": "//", "typescriptreact": "//"}


def explanation(test_id: str) -> str:
    """The one-paragraph explanation shown for a finding (also used when the id is unknown)."""
    advice = advice_for(test_id)
    if advice is None:
        return f"{test_id}: no explanation is available for this finding."
    cwe = f" (CWE-{advice.cwe}: https://cwe.mitre.org/data/definitions/{advice.cwe}.html)" if advice.cwe else ""
    idiom = f"\nSafer: {advice.safe_idiom}" if advice.safe_idiom else ""
    return f"{test_id} {advice.title}: {advice.explanation}{cwe}{idiom}"


def code_actions(uri: str, lines: Sequence[str], language: str,
                 diagnostics: Sequence[types.Diagnostic]) -> list[types.CodeAction]:
    """Code actions for the security diagnostics among ``diagnostics`` (others are ignored)."""
    actions: list[types.CodeAction] = []
    leader = _COMMENT.get(language, "#")
    for diag in diagnostics:
        if diag.source != SOURCE or not diag.code:
            continue
        test_id = str(diag.code)
        advice = advice_for(test_id)
        title = advice.title if advice else test_id
        actions.append(types.CodeAction(
            title=f"Explain {test_id}: {title}",
            kind=types.CodeActionKind.QuickFix,
            diagnostics=[diag],
            command=types.Command(title=f"Explain {test_id}", command=EXPLAIN_COMMAND, arguments=[test_id]),
        ))
        if advice is None or not advice.safe_idiom:
            continue
        line = diag.range.start.line
        text = lines[line] if 0 <= line < len(lines) else ""
        indent = text[: len(text) - len(text.lstrip())]
        comment = "".join(f"{indent}{leader} {part}\n" for part in
                          [f"{test_id} safer idiom:", *advice.safe_idiom.splitlines()])
        edit = types.TextEdit(range=types.Range(start=types.Position(line=line, character=0),
                                                end=types.Position(line=line, character=0)), new_text=comment)
        actions.append(types.CodeAction(
            title=f"Insert the safer idiom for {test_id} as a comment",
            kind=types.CodeActionKind.QuickFix,
            diagnostics=[diag],
            edit=types.WorkspaceEdit(changes={uri: [edit]}),
        ))
    return actions


def register(ls: ProtegeServer) -> None:
    def security_actions(params: types.CodeActionParams) -> list[types.CodeAction]:
        if params.text_document.uri not in ls.workspace.text_documents:
            return []  # actions are for findings in open documents only
        doc = ls.workspace.get_text_document(params.text_document.uri)
        return code_actions(doc.uri, doc.lines, doc.language_id or "python", params.context.diagnostics)

    features = ls.protocol.fm.features
    earlier = features.get(types.TEXT_DOCUMENT_CODE_ACTION)
    if earlier is None:
        @ls.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                    types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix]))
        def on_code_action(params: types.CodeActionParams) -> list[types.CodeAction] | None:
            """LSP ``textDocument/codeAction``: explain security findings and offer safer idioms."""
            return security_actions(params) or None
    else:
        # LSP allows one handler per method and other features (explain) offer code actions too:
        # wrap the earlier handler so both sets reach the client, whichever registers first.
        async def combined(params: types.CodeActionParams) -> list[types.CodeAction | types.Command] | None:
            """LSP ``textDocument/codeAction``: security quick fixes, then the earlier handler's actions."""
            first = earlier(params)
            if inspect.isawaitable(first):
                first = await first
            actions = [*security_actions(params), *(first or [])]
            return actions or None

        features[types.TEXT_DOCUMENT_CODE_ACTION] = combined

    @ls.command(EXPLAIN_COMMAND)
    def explain(*args: Any) -> str:
        """``protege.explainFinding``: show what a finding means (argument: its test id)."""
        test_id = str(args[0]) if args and isinstance(args[0], (str, int)) else ""
        if not test_id:
            from pygls.exceptions import JsonRpcInvalidParams

            raise JsonRpcInvalidParams(f"{EXPLAIN_COMMAND} expects one argument: a test id such as 'B602'")
        message = explanation(test_id)
        ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=message))
        return message
