"""Shutdown while index work is queued and running answers cleanly (no pygls iteration error)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest_lsp
from conftest import editor_client
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

REPO = Path(__file__).parent / "fixtures" / "index" / "repo"
SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve"], client_factory=editor_client)
STATE: dict[str, object] = {}


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tiny_model_dir: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(REPO, ws)
    for i in range(1500):  # seconds of indexing, so the shutdown lands while it runs
        (ws / f"gen_{i:04d}.py").write_text(f"def generated_{i}(x):\n    return x + {i}\n")
    STATE["ws"] = ws
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=ws.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        initialization_options={"model": str(tiny_model_dir), "index": {"enabled": True,
                                                                       "cacheDir": str(tmp_path / "cache")}}))
    yield
    if not STATE.get("shut"):
        await lsp_client.shutdown_session()


async def test_shutdown_with_index_work_in_flight_answers(client: LanguageClient) -> None:
    def run(name: str, *args: object) -> asyncio.Future[object]:
        return asyncio.ensure_future(client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(args))))

    pending = [run("protege.indexWorkspace")] + [run("protege.search", {"query": f"generated {i}", "k": 3})
                                                 for i in range(6)]
    await asyncio.sleep(0.5)
    assert not pending[0].done(), "the index run finished before the shutdown: give it more files"
    # Before the fix this raised JsonRpcInternalError "dictionary changed size during iteration".
    assert await asyncio.wait_for(client.shutdown_async(None), 60) is None
    STATE["shut"] = True
    client.exit(None)
    if client._server:
        assert await asyncio.wait_for(client._server.wait(), 60) == 0
    for fut in pending:
        fut.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
