"""Token healing end to end: a real LSP client (pytest-lsp) completes with the cursor mid-identifier.

Typing forward inside a word must keep the engine's KV cache: with healing the prompt ends at the
word's start, so the next keystroke sends the very same prompt and the engine reuses all of it;
with the ``healing`` setting off, the prompt tail changes and the suffix must be recomputed.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from conftest import editor_client
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from transformers import AutoTokenizer

from server.healing import TokenHealer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (ROOT / "server" / "postprocess.py").read_text(encoding="utf-8")
SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve"], client_factory=editor_client)


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, fitted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("heal-ws")
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=ws.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        # No suggestion cache: every keystroke must reach the engine so its prompt reuse shows.
        # Memory off: these tests check what the fitted model itself produces (tests/test_memory_e2e.py has the memory).
        initialization_options={"model": str(fitted_model_dir), "debounceMs": 0, "index": {"enabled": False},
                                "memory": {"enabled": False},
                                "cacheSize": 0, "multiline": False, "maxNewTokensLine": 8},
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def typing_point(model_dir: Path) -> tuple[str, str, int, TokenHealer]:
    """Lines of a real module, the last cut inside an identifier where two keystrokes keep one healed prefix."""
    healer = TokenHealer(AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True))
    lines = SOURCE.split("\n")
    for i in range(10, len(lines)):
        for m in re.finditer(r"[A-Za-z_]\w{7,}", lines[i]):
            head = "\n".join(lines[:i]) + "\n" + lines[i][: m.start()]
            word = m.group()
            plans = [healer.plan_prefix(head + word[:k]) for k in (3, 4, 5)]
            if plans[0].removed and len({p.prefix for p in plans}) == 1:
                return head + word[:3], word, i, healer
    raise AssertionError("no identifier in the sample heals to one prefix over two keystrokes")


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    ))
    assert isinstance(result, types.InlineCompletionList)
    return result


async def engine_stats(client: LanguageClient) -> dict[str, Any]:
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.status", arguments=[]))
    assert isinstance(status, dict)
    return dict(status["engine"])


def type_char(client: LanguageClient, uri: str, version: int, line: int, character: int, ch: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=line, character=character),
                              end=types.Position(line=line, character=character)), text=ch)]))


async def keystroke_reuse(client: LanguageClient, uri: str, version: int, line: int, col: int,
                          ch: str) -> tuple[int, int, types.InlineCompletionList]:
    """Type ``ch`` at (line, col), complete after it; (reused, prompt tokens) of that request."""
    before = await engine_stats(client)
    type_char(client, uri, version, line, col, ch)
    result = await inline(client, uri, line, col + 1)
    after = await engine_stats(client)
    assert after["requests"] == before["requests"] + 1
    return (after["reused_tokens"] - before["reused_tokens"], after["prompt_tokens"] - before["prompt_tokens"],
            result)


async def test_mid_identifier_typing_keeps_the_prompt_and_never_repeats(client: LanguageClient,
                                                                        fitted_model_dir: Path) -> None:
    prefix, word, line, healer = typing_point(fitted_model_dir)
    col = len(prefix.rsplit("\n", 1)[-1])
    doc = prefix + "\n" + "\n".join(SOURCE.split("\n")[line + 1: line + 12])
    uri = "file:///tmp/protege-heal/typing.py"
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=doc)))

    first = await inline(client, uri, line, col)
    removed = healer.plan_prefix(prefix).removed
    # The tiny model may have nothing to add after re-typing the backed-off characters (no item);
    # whatever it adds goes at the cursor, without those characters a second time.
    for item in first.items:
        assert item.range is not None and item.range.start == types.Position(line=line, character=col)
        assert isinstance(item.insert_text, str) and not item.insert_text.startswith(removed)

    reused, prompt, _ = await keystroke_reuse(client, uri, 2, line, col, word[3])
    assert prompt > 0 and reused == prompt - 1, (reused, prompt)  # the whole prompt was already cached

    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"protege": {"healing": False}}))
    await asyncio.sleep(0.2)
    await inline(client, uri, line, col + 1)  # prime the cache with the unhealed prompt
    reused_off, prompt_off, result = await keystroke_reuse(client, uri, 3, line, col + 1, word[4])
    assert result.items is not None
    # Without healing the prompt's prefix tail changes, so the suffix after it is recomputed.
    assert reused_off < prompt_off - 1, (reused_off, prompt_off)
