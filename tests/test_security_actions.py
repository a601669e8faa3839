"""Security code actions: explain a finding and offer its safer idiom (pure logic, then a real LSP client)."""

from __future__ import annotations

import asyncio
import sys

import pytest
import pytest_lsp
from conftest import editor_client
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from server.features.security_actions import EXPLAIN_COMMAND, SOURCE, code_actions, explanation


def _diag(code: str, line: int = 1, source: str = SOURCE) -> types.Diagnostic:
    return types.Diagnostic(range=types.Range(start=types.Position(line=line, character=4),
                                              end=types.Position(line=line, character=40)),
                            message="finding", source=source, code=code)


def test_actions_explain_and_insert_the_idiom_as_a_comment() -> None:
    lines = ["def run(cmd):", "    subprocess.call(cmd, shell=True)"]
    actions = code_actions("file:///a.py", lines, "python", [_diag("B602"), _diag("E501", source="ruff")])
    assert [a.title for a in actions] == ["Explain B602: subprocess with shell=True",
                                         "Insert the safer idiom for B602 as a comment"]
    assert actions[0].command is not None and actions[0].command.arguments == ["B602"]
    edit = actions[1].edit
    assert edit is not None and edit.changes is not None
    (text_edit,) = edit.changes["file:///a.py"]
    assert text_edit.range.start == types.Position(line=1, character=0)
    assert text_edit.new_text == ("    # B602 safer idiom:\n"
                                  "    # subprocess.run([\"ls\", \"-l\", path], check=True)\n")


def test_js_comment_leader_and_unknown_ids() -> None:
    actions = code_actions("file:///a.js", ["x", "el.innerHTML = s;"], "javascript", [_diag("JS004")])
    assert actions[1].edit is not None and actions[1].edit.changes is not None
    assert actions[1].edit.changes["file:///a.js"][0].new_text.startswith("// JS004 safer idiom:")
    only_explain = code_actions("file:///a.py", ["", ""], "python", [_diag("B999")])
    assert [a.title for a in only_explain] == ["Explain B999: B999"]
    assert "CWE-78" in explanation("B602") and "no explanation" in explanation("B999")


# The real server (security_actions is in FEATURE_MODULES) driven by a real LSP client; no model needed.
SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve", "--model", "/nonexistent-model"], client_factory=editor_client)


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("workspace")
    params = types.InitializeParams(capabilities=client_capabilities("visual-studio-code"), root_uri=ws.as_uri(),
                                    initialization_options={"index": {"enabled": False}})
    result = await lsp_client.initialize_session(params)
    assert result.capabilities.code_action_provider is not None
    yield
    await lsp_client.shutdown_session()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_code_action_round_trip(client: LanguageClient) -> None:
    """Security actions come back beside the explain feature's own action; the explain command answers."""
    uri = "file:///tmp/protege-actions/run.py"
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text="import subprocess\nsubprocess.call(c, shell=True)\n")))
    diag = _diag("B602")
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=diag.range,
        context=types.CodeActionContext(diagnostics=[diag])))
    titles = [a.title for a in actions or []]
    assert titles[:2] == ["Explain B602: subprocess with shell=True", "Insert the safer idiom for B602 as a comment"]
    assert len(titles) > 2  # the explain feature's action is still offered
    reply = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=EXPLAIN_COMMAND, arguments=["B602"]))
    assert isinstance(reply, str) and "shell" in reply
    for _ in range(50):
        if any("CWE-78" in m.message for m in client.messages):
            break
        await asyncio.sleep(0.1)
    assert any("B602" in m.message and "CWE-78" in m.message for m in client.messages)
