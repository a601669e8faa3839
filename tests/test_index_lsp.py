"""Index commands end to end through a real LSP client (pytest-lsp over stdio): indexWorkspace with
$/progress, cancellation, search, and updates on didSave / didChangeWatchedFiles."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from conftest import editor_client
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

REPO = Path(__file__).parent / "fixtures" / "index" / "repo"
SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve"], client_factory=editor_client)
WS: dict[str, Path] = {}


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("index-lsp")
    ws = tmp / "ws"
    shutil.copytree(REPO, ws)
    WS["root"] = ws

    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=ws.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        initialization_options={"model": str(tiny_model_dir), "index": {"enabled": True,
                                                                       "cacheDir": str(tmp / "cache")}},
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, *args: object) -> object:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=list(args)))


async def search_paths(client: LanguageClient, query: str, k: int = 5) -> list[str]:
    hits = await command(client, "protege.search", {"query": query, "k": k})
    assert isinstance(hits, list)
    return [h["path"] for h in hits]


async def test_index_workspace_reports_progress(client: LanguageClient) -> None:
    stats = await command(client, "protege.indexWorkspace")
    assert isinstance(stats, dict) and stats["files_indexed"] == 6 and not stats["cancelled"]
    reports = [r for token, rs in client.progress_reports.items() if token.startswith("protege-index") for r in rs]
    kinds = [r.kind for r in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds
    assert reports[0].cancellable is True
    assert "6 indexed" in reports[-1].message


async def test_server_registers_file_watchers_with_the_client(client: LanguageClient) -> None:
    # VS Code's capabilities allow dynamic registration of didChangeWatchedFiles: the server asks for
    # reports of changes made outside the editor (git checkout, generators, other tools).
    status = await command(client, "protege.status")
    assert isinstance(status, dict) and status["index"]["watchers"] is True
    (watch,) = [r for r in client.registrations if r.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES]
    assert [w["globPattern"] for w in watch.register_options["watchers"]] == ["**/*"]


async def test_search_command(client: LanguageClient) -> None:
    hits = await command(client, "protege.search", {"query": "compute_tax", "k": 3})
    assert isinstance(hits, list) and hits[0]["path"] == "shop/pricing.py"
    assert hits[0]["uri"].endswith("/ws/shop/pricing.py") and hits[0]["uri"].startswith("file://")
    with pytest.raises(Exception, match="expects"):
        await command(client, "protege.search", {"query": ""})
    assert (await search_paths(client, "compute_tax"))[0] == "shop/pricing.py"  # still serving


async def test_did_save_and_watched_files_update_the_index(client: LanguageClient) -> None:
    ws = WS["root"]
    new = ws / "shop" / "refunds.py"
    new.write_text("def issue_refund_voucher(order_id, amount):\n    return {'order': order_id, 'amount': amount}\n")
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=new.as_uri())))
    for _ in range(300):
        if "shop/refunds.py" in await search_paths(client, "issue_refund_voucher", 3):
            break
        await asyncio.sleep(0.2)
    assert (await search_paths(client, "issue_refund_voucher", 3))[0] == "shop/refunds.py"

    (ws / "web" / "api.js").unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=(ws / "web" / "api.js").as_uri(), type=types.FileChangeType.Deleted)]))
    for _ in range(300):
        if "web/api.js" not in await search_paths(client, "fetchOrders", 10):
            break
        await asyncio.sleep(0.2)
    assert "web/api.js" not in await search_paths(client, "fetchOrders", 10)


async def test_cancel_through_work_done_progress(client: LanguageClient) -> None:
    ws = WS["root"]
    # Enough work that the cancel lands mid-run even on a fast machine: CI indexed 80 such files in
    # 0.28 s, before a cancel polled every 50 ms could land; 1500 take seconds there.
    n_files = 1500
    for i in range(n_files):
        (ws / f"gen_{i:04d}.py").write_text(
            "\n\n".join(f"def generated_{i}_{j}(x):\n    return x * {j} + {i}" for j in range(4)) + "\n")
    task = asyncio.ensure_future(command(client, "protege.indexWorkspace"))
    token = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        token = next((t for t in client.progress_reports if t.startswith("protege-index")
                      and client.progress_reports[t] and client.progress_reports[t][-1].kind != "end"), None)
        if token:
            break  # cancel right after `begin`: the walk and chunking are still ahead of the embedding
        await asyncio.sleep(0.005)
    assert token is not None
    client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
    stats = await asyncio.wait_for(task, 300)
    assert isinstance(stats, dict) and stats["cancelled"] is True
    assert stats["files_indexed"] < n_files
    assert client.progress_reports[token][-1].message.startswith("cancelled")
    # The index stays consistent and a later run finishes the job.
    rest = await command(client, "protege.indexWorkspace")
    assert isinstance(rest, dict) and not rest["cancelled"]
    assert stats["files_indexed"] + rest["files_indexed"] >= n_files
