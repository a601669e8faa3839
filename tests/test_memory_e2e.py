"""End to end through a real LSP client: a completion that only another file of the workspace can supply is
served from the repository memory, says where it came from, and follows a change to that file."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from conftest import editor_client
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve", "--stdio"],
                            client_factory=editor_client)  # --stdio: as vscode-languageclient starts it
HELPER = ("def load(rows):\n"
          "    return normalise_quux_records(rows, tolerance=GLACIAL_TOLERANCE, keep_order=True)\n")
WORKSPACE: dict[str, Path] = {}


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("memory-ws")
    (ws / "helpers.py").write_text(HELPER, encoding="utf-8")
    (ws / "main.py").write_text("import helpers\n", encoding="utf-8")
    WORKSPACE["root"] = ws
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=ws.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        initialization_options={"debounceMs": 0, "index": {"enabled": False, "cacheDir": str(ws / ".cache")}},
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="protege.status"))


async def wait_memory(client: LanguageClient, tokens_above: int = 0) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = await status(client)
        mem = st["memory"]
        if mem.get("workspace") and mem.get("tokens", 0) > tokens_above:
            return mem
        await asyncio.sleep(0.2)
    raise AssertionError(f"memory never became ready: {st['memory']}")


async def complete(client: LanguageClient, uri: str, text: str, line: int, col: int, version: int):
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
    res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(res, types.InlineCompletionList) and res.items
    return res.items[0]


async def test_completion_only_another_file_knows_is_served_with_its_source(client: LanguageClient) -> None:
    mem = await wait_memory(client)
    assert mem["files"] == 2 and mem["state"] == "ready"
    ws = WORKSPACE["root"]
    uri = (ws / "main.py").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text="import helpers\n")))
    doc = "import helpers\n\ndef reload(rows):\n    return normalise_quux_records(rows, tolerance="
    item = await complete(client, uri, doc, 3, len(doc.split("\n")[3]), 2)
    assert str(item.insert_text).startswith("GLACIAL_TOLERANCE, keep_order=True)"), item.insert_text
    assert item.command is not None and item.command.arguments
    sources = item.command.arguments[0]["sources"]
    assert sources and sources[0]["path"] == "helpers.py" and sources[0]["line"] == 2

    # A change to the other file reaches the memory (watched-file notification), within about a second.
    before = mem["tokens"]
    (ws / "helpers.py").write_text(HELPER.replace("GLACIAL_TOLERANCE", "GLACIAL_TOLERANCE_STRICT_MODE_ON")
                                   + "# more\n", encoding="utf-8")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[types.FileEvent(
        uri=(ws / "helpers.py").as_uri(), type=types.FileChangeType.Changed)]))
    await wait_memory(client, tokens_above=before)
    item = await complete(client, uri, doc + " ", 3, len(doc.split("\n")[3]) + 1, 3)  # new text: no cache hit
    item = await complete(client, uri, doc, 3, len(doc.split("\n")[3]), 4)
    assert "STRICT_MODE_ON" in str(item.insert_text), item.insert_text


async def test_status_reports_the_memory(client: LanguageClient) -> None:
    mem = (await status(client))["memory"]
    assert mem["enabled"] and mem["tokens"] > 0 and mem["build_s"] >= 0 and mem["mb"] >= 0
    assert mem["weights"] is not None
