"""End to end through a real LSP client (pytest-lsp over stdio) against the real server and a tiny real model.

Each capability profile (VS Code, Neovim) gets its own server process; every bad request is
followed by a good one to show the server keeps serving.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import pytest_lsp
from conftest import editor_client
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
# The fitted test model memorised this file, so completions inside it are predictable.
SOURCE = (ROOT / "tests" / "fixtures" / "server" / "inventory.py").read_text(encoding="utf-8")
SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve"], client_factory=editor_client)


@pytest_lsp.fixture(config=SERVER, params=["visual-studio-code", "neovim"], scope="module")
async def client(lsp_client: LanguageClient, request: pytest.FixtureRequest, fitted_model_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("workspace")
    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        root_uri=ws.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        # Memory off: these tests check what the fitted model itself produces (tests/test_memory_e2e.py has the memory).
        initialization_options={"model": str(fitted_model_dir), "debounceMs": 0, "index": {"enabled": False},
                                "memory": {"enabled": False},
                                "bogusOption": 1, "maxNewTokens": "many"},
    )
    lsp_client.set_configuration({"contextTokens": 256}, section="protege")  # as the fitted model was trained
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, name: str, text: str, language: str = "python") -> str:
    uri = f"file:///tmp/protege-e2e/{name}"
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))
    return uri


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    ))
    assert isinstance(result, types.InlineCompletionList)
    return result


def cut_point(marker: str = "    def total(self):", rest: bool = True) -> tuple[str, int, int]:
    """A real cursor position: the body line after ``marker`` blanked, the rest of the file kept."""
    lines = SOURCE.split("\n")
    i = next(n for n, ln in enumerate(lines) if ln.startswith(marker))
    body = lines[i + 1]
    indent = body[: len(body) - len(body.lstrip())]
    after = lines[i + 2:] if rest else []
    doc = "\n".join(lines[: i + 1] + [indent] + after)
    return doc, i + 1, len(indent)


async def test_initialize_warns_once_about_bad_options(client: LanguageClient) -> None:
    for _ in range(50):
        if len(client.messages) >= 2:
            break
        await asyncio.sleep(0.1)
    texts = [m.message for m in client.messages]
    assert any("bogusOption" in t for t in texts), texts
    assert any("maxNewTokens" in t for t in texts), texts
    assert len([t for t in texts if "maxNewTokens" in t]) == 1


async def test_inline_completion_end_to_end(client: LanguageClient) -> None:
    doc, line, char = cut_point()
    uri = open_doc(client, "inline.py", doc)
    result = await inline(client, uri, line, char)
    assert len(result.items) == 1
    item = result.items[0]
    assert isinstance(item.insert_text, str) and item.insert_text.strip()
    assert item.range is not None and item.range.start == types.Position(line=line, character=char)


async def test_completion_fallback_multiline_insert(client: LanguageClient) -> None:
    doc, line, char = cut_point()
    uri = open_doc(client, "fallback.py", doc)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=char)))
    assert isinstance(result, types.CompletionList)
    assert result.items and result.items[0].text_edit is not None
    assert result.items[0].text_edit.new_text.strip()


async def test_incremental_change_then_typed_ahead_cache_hit(client: LanguageClient) -> None:
    doc, line, char = cut_point()
    uri = open_doc(client, "typed.py", doc)
    first = (await inline(client, uri, line, char)).items[0].insert_text
    assert isinstance(first, str) and len(first) >= 2
    typed = first[0]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=line, character=char),
                              end=types.Position(line=line, character=char)), text=typed)]))
    second = (await inline(client, uri, line, char + 1)).items
    assert second and second[0].insert_text == first[1:]
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.status", arguments=[]))
    assert status["cache"]["typedAheadHits"] >= 1
    assert status["model"]["state"] == "ready"
    # Where the model request's time went; the typed-ahead hit is not a model request.
    stages = status["latency"]
    assert stages["requests"] >= 1
    parts = ("lookup", "context", "prompt", "memory", "generate", "postprocess", "screen")
    assert set(parts) <= set(stages) and stages["generate"] > 0
    assert sum(stages[p] for p in parts) <= stages["total"] * 1.5 + 1  # medians of parts of one total


async def test_bad_positions_and_unknown_documents_then_still_serving(client: LanguageClient) -> None:
    uri = open_doc(client, "small.py", "x = 1\n")
    with pytest.raises(Exception, match="bad position"):
        await inline(client, uri, 99, 0)
    with pytest.raises(Exception, match="bad position"):
        await inline(client, uri, 0, 500)
    with pytest.raises(Exception, match="unknown document"):
        await inline(client, "file:///tmp/protege-e2e/never-opened.py", 0, 0)
    doc, line, char = cut_point()
    ok_uri = open_doc(client, "after-bad.py", doc)
    assert (await inline(client, ok_uri, line, char)).items


async def test_huge_and_binary_documents_rejected_clearly(client: LanguageClient) -> None:
    huge = open_doc(client, "huge.py", "x = 1\n" * 400_000)
    with pytest.raises(Exception, match="too large"):
        await inline(client, huge, 10, 0)
    binary = open_doc(client, "blob.py", "abc\x00\x01\x02def\n")
    with pytest.raises(Exception, match="binary"):
        await inline(client, binary, 0, 3)
    doc, line, char = cut_point()
    assert (await inline(client, open_doc(client, "after-huge.py", doc), line, char)).items


async def test_cancellation_and_supersession(client: LanguageClient) -> None:
    doc, line, char = cut_point()
    uri = open_doc(client, "cancel.py", doc)
    # A long debounce keeps the request in flight until the cancel arrives, however fast the model decodes.
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"protege": {"debounceMs": 3000}}))
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=char),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    fut = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me")
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(Exception, match="(?i)cancel"):
        await asyncio.wrap_future(fut)
    # Two requests for the same document: the older one is superseded and returns nothing. The debounce holds
    # the first in flight until the second arrives (with none, a fast or cached answer can beat the second).
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"protege": {"debounceMs": 1500}}))
    uri2 = open_doc(client, "supersede.py", doc)
    a = asyncio.ensure_future(inline(client, uri2, line, char))
    b = asyncio.ensure_future(inline(client, uri2, line, char))
    ra, rb = await asyncio.gather(a, b)
    assert not ra.items and rb.items
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"protege": {"debounceMs": 0}}))
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.status", arguments=[]))
    assert status["requests"]["cancelled"] >= 1 and status["requests"]["superseded"] >= 1
    # Still serving after both.
    assert (await inline(client, open_doc(client, "after-cancel.py", doc), line, char)).items


async def test_memorised_completion_is_exact(client: LanguageClient) -> None:
    doc, line, char = cut_point("    def total(self):")
    items = (await inline(client, open_doc(client, "exact.py", doc), line, char)).items
    assert items and items[0].insert_text == "return sum(self.items.values())"


async def test_insecure_suggestion_is_blocked(client: LanguageClient) -> None:
    # The model completes `return subprocess.call("tar czf ..." + path, shell=True)`: Bandit B602, HIGH.
    doc, line, char = cut_point("def archive(path):", rest=False)
    uri = open_doc(client, "archive.py", doc)
    items = (await inline(client, uri, line, char)).items
    assert not items
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.status", arguments=[]))
    assert status["screening"]["blocked"] >= 1


async def test_annotated_suggestion_carries_findings_and_publishes_diagnostics(client: LanguageClient) -> None:
    # `open("/tmp/...", "w")`: Bandit B108 (MEDIUM): shown, with a command that publishes the finding.
    doc, line, char = cut_point("def scratch_file():", rest=False)
    uri = open_doc(client, "scratch.py", doc)
    items = (await inline(client, uri, line, char)).items
    assert items and "/tmp/" in str(items[0].insert_text)
    cmd = items[0].command
    assert cmd is not None and cmd.command == "protege.suggestionAccepted"
    assert cmd.arguments and [f["test_id"] for f in cmd.arguments[0]["findings"]] == ["B108"]
    # Accept: apply the text, then run the command as an editor does.
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=line, character=char),
                              end=types.Position(line=line, character=char)), text=str(items[0].insert_text))]))
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=cmd.command, arguments=cmd.arguments))
    for _ in range(50):
        if client.diagnostics.get(uri):
            break
        await asyncio.sleep(0.1)
    diags = client.diagnostics.get(uri, [])
    assert [d.code for d in diags] == ["B108"] and diags[0].range.start.line == line


async def test_malformed_configuration_keeps_serving(client: LanguageClient) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"protege": {"contextTokens": -5, "dtype": "float99"}}))  # both bad: defaults kept
    for _ in range(50):
        if any("contextTokens" in m.message for m in client.messages):
            break
        await asyncio.sleep(0.1)
    assert any("contextTokens" in m.message for m in client.messages)
    assert any("dtype" in m.message for m in client.messages)
    doc, line, char = cut_point()
    await inline(client, open_doc(client, "after-config.py", doc), line, char)  # answers (a list)
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.status", arguments=[]))
    assert status["config"]["contextTokens"] == 1024 and status["config"]["dtype"] == "float32"
    assert status["model"]["state"] == "ready"
