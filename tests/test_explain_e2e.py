"""Explanations end to end: a real server (pytest-lsp over stdio), a tiny trained model, a real index.

The fixture repository is built here: ``normalize_score`` (documented, in pkg/core.py) is called from
``build_report`` (pkg/report.py) and ``handle_request`` (pkg/web.py, which also evaluates user input),
and the README mentions it. One server runs on the indexed copy (VS Code profile), one on an
unindexed copy (Neovim profile).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from conftest import editor_client
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve"], client_factory=editor_client)

FILES = {
    "pkg/__init__.py": "",
    "pkg/core.py": '''"""Core scoring helpers."""


def normalize_score(raw, top=100):
    """Scale a raw score into the range 0..1 by dividing by the top score."""
    if top <= 0:
        raise ValueError("top must be positive")
    return clamp_unit(raw / top)


def clamp_unit(x):
    return max(0.0, min(1.0, x))


LIMIT = 10
''',
    "pkg/report.py": '''from pkg.core import normalize_score


def build_report(scores):
    return [normalize_score(s) for s in scores]
''',
    "pkg/web.py": '''from pkg.core import normalize_score


def handle_request(value):
    expr = eval(input())
    return normalize_score(value + expr, top=10)
''',
    "README.md": '''# Scores

Use normalize_score to map raw points into 0..1 before reporting them.
''',
}


def line_of(path: str, needle: str) -> int:
    """0-based line of the first line of FILES[path] containing ``needle``."""
    return next(n for n, ln in enumerate(FILES[path].split("\n")) if needle in ln)


def write_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def indexed_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from indexing.api import RepoIndex
    from indexing.config import IndexConfig

    root = write_repo(tmp_path_factory.mktemp("explain-repo"))
    cache = tmp_path_factory.mktemp("explain-index")
    with RepoIndex.open(root, IndexConfig(cache_dir=str(cache))) as index:
        stats = index.update()
    assert stats.files_indexed == len(FILES) and stats.chunks_embedded > 0
    return root, cache


async def start(lsp_client: LanguageClient, profile: str, root: Path, options: dict[str, Any]) -> None:
    params = types.InitializeParams(
        capabilities=client_capabilities(profile), root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="repo")], initialization_options=options)
    await lsp_client.initialize_session(params)


@pytest_lsp.fixture(config=SERVER, scope="module")
async def client(lsp_client: LanguageClient, fitted_model_dir: Path, indexed_repo: tuple[Path, Path]):
    root, cache = indexed_repo
    await start(lsp_client, "visual-studio-code", root,
                {"model": str(fitted_model_dir), "debounceMs": 0, "index": {"cacheDir": str(cache)}})
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=SERVER, scope="module")
async def bare_client(lsp_client: LanguageClient, fitted_model_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory):
    root = write_repo(tmp_path_factory.mktemp("explain-bare"))
    cache = tmp_path_factory.mktemp("explain-bare-index")
    await start(lsp_client, "neovim", root,
                {"model": str(fitted_model_dir), "debounceMs": 0, "index": {"cacheDir": str(cache)}})
    lsp_client.root = root  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


def open_file(client: LanguageClient, root: Path, rel: str, language: str = "python") -> str:
    uri = (root / rel).as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=FILES[rel])))
    return uri


def cursor(uri: str, line: int, character: int = 4, max_tokens: int = 16) -> list[dict[str, Any]]:
    """Arguments for an explanation at a cursor; a small summary budget keeps the tests quick."""
    pos = {"line": line, "character": character}
    return [{"uri": uri, "range": {"start": pos, "end": pos}, "maxTokens": max_tokens}]


async def explain(client: LanguageClient, *arguments: Any) -> dict[str, Any]:
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.explain", arguments=list(arguments)))
    assert isinstance(result, dict) and isinstance(result["markdown"], str)
    return result


def facts(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in result["facts"] if f["kind"] == kind]


async def test_function_explanation_lists_real_callers_and_definition(client: LanguageClient,
                                                                      indexed_repo: tuple[Path, Path]) -> None:
    root, _ = indexed_repo
    uri = open_file(client, root, "pkg/core.py")
    result = await explain(client, *cursor(uri, line_of("pkg/core.py", "if top <= 0")))
    md = result["markdown"]
    assert result["symbol"] == "normalize_score" and result["indexed"] is True
    def_line = line_of("pkg/core.py", "def normalize_score") + 1
    assert f"pkg/core.py:{def_line}" in md and "def normalize_score(raw, top=100):" in md
    callers = {(f["path"], f["line"], f["text"]) for f in facts(result, "caller")}
    assert callers == {
        ("pkg/report.py", line_of("pkg/report.py", "return [normalize_score") + 1, "`build_report`"),
        ("pkg/web.py", line_of("pkg/web.py", "return normalize_score") + 1, "`handle_request`"),
    }
    for path, line, _ in callers:
        assert f"[{path}:{line}]({(root / path).as_uri()}#L{line})" in md
    callees = {f["text"].split("`")[1]: f for f in facts(result, "callee")}
    assert callees["clamp_unit"]["line"] == line_of("pkg/core.py", "def clamp_unit") + 1
    docs = facts(result, "doc")
    assert [(d["path"], d["line"]) for d in docs] == [("README.md", line_of("README.md", "normalize_score") + 1)]
    assert any("Scale a raw score" in f["text"] for f in facts(result, "docstring"))
    # The student's summary is there, labelled as generated, and kept apart from the facts.
    summary = result["summary"]
    assert summary is not None and summary["generated"] is True and summary["promptTokens"] > 0
    assert summary["stopReason"] in ("eos", "stop", "length")
    if summary["text"]:
        assert f"generated by the local model ({summary['model']})" in md and f"> {summary['text']}" in md
    else:  # the tiny model may end the docstring at once: said so, never filled with a fact
        assert "the model produced no text" in md
    assert not result["hints"]


async def test_uri_line_arguments_and_code_lens(client: LanguageClient, indexed_repo: tuple[Path, Path]) -> None:
    root, _ = indexed_repo
    uri = open_file(client, root, "pkg/report.py")
    result = await explain(client, uri, line_of("pkg/report.py", "return [normalize_score"))
    assert result["symbol"] == "build_report"
    callees = facts(result, "callee")
    assert any(f["path"] == "pkg/core.py" and f["line"] == line_of("pkg/core.py", "def normalize_score") + 1
               for f in callees), callees
    core = (root / "pkg/core.py").as_uri()
    lenses = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=core)))
    assert lenses is not None
    assert [lens.range.start.line for lens in lenses] == [line_of("pkg/core.py", "def normalize_score"),
                                                          line_of("pkg/core.py", "def clamp_unit")]
    lens = lenses[1]
    assert lens.command is not None and lens.command.command == "protege.explain"
    from_lens = await explain(client, *lens.command.arguments or [])
    assert from_lens["symbol"] == "clamp_unit"
    assert {(f["path"], f["text"]) for f in facts(from_lens, "caller")} == {("pkg/core.py", "`normalize_score`")}


async def test_code_action_and_security_finding_in_selection(client: LanguageClient,
                                                             indexed_repo: tuple[Path, Path]) -> None:
    root, _ = indexed_repo
    uri = open_file(client, root, "pkg/web.py")
    line = line_of("pkg/web.py", "eval(input())")
    rng = types.Range(start=types.Position(line=line, character=0), end=types.Position(line=line + 1, character=0))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=rng,
        context=types.CodeActionContext(diagnostics=[])))
    assert actions is not None
    action = next(a for a in actions if isinstance(a, types.Command) and a.title == "Explain this code")
    assert action.command == "protege.explain"
    result = await explain(client, *action.arguments or [])
    assert [f["test_id"] for f in result["findings"]] == ["B307"]
    assert result["findings"][0]["line"] == line
    assert "B307" in result["markdown"] and f"pkg/web.py:{line + 1}" in result["markdown"]
    assert any("handle_request" in f["text"] for f in facts(result, "enclosing"))
    # The whole function around it: the finding is still reported, the safe file has none.
    whole = await explain(client, *cursor(uri, line_of("pkg/web.py", "def handle_request")))
    assert [f["test_id"] for f in whole["findings"]] == ["B307"]
    core = await explain(client, *cursor((root / "pkg/core.py").as_uri(), line_of("pkg/core.py", "if top")))
    assert core["findings"] == [] and any("No insecure" in f["text"] for f in facts(core, "screen"))


async def test_hover_answers_with_signature_location_and_summary(client: LanguageClient,
                                                                 indexed_repo: tuple[Path, Path]) -> None:
    root, _ = indexed_repo
    uri = open_file(client, root, "pkg/report.py")
    line = line_of("pkg/report.py", "return [normalize_score")
    col = FILES["pkg/report.py"].split("\n")[line].index("normalize_score") + 3
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col)))
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    value = hover.contents.value
    assert "def normalize_score(raw, top=100):" in value
    assert f"pkg/core.py:{line_of('pkg/core.py', 'def normalize_score') + 1}" in value
    assert "Scale a raw score" in value  # the docstring: a fact, so no generated text is needed
    assert "2 call site(s) in 2 file(s)" in value
    assert hover.range is not None and hover.range.start.character <= col <= hover.range.end.character
    # Nothing defined under the cursor: no hover.
    blank = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=0)))
    assert blank is None


async def test_progress_reported_for_generation(client: LanguageClient, indexed_repo: tuple[Path, Path]) -> None:
    root, _ = indexed_repo
    uri = open_file(client, root, "pkg/core.py")
    await explain(client, {**cursor(uri, line_of("pkg/core.py", "return max"))[0], "maxTokens": 7})
    tokens = [t for t in client.progress_reports if str(t).startswith("protege-explain-")]
    assert tokens
    kinds = [getattr(p, "kind", None) for p in client.progress_reports[tokens[-1]]]  # the reported values
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds


async def test_cancel_pending_explain_then_keep_serving(client: LanguageClient,
                                                        indexed_repo: tuple[Path, Path]) -> None:
    root, _ = indexed_repo
    status: Any
    uri = open_file(client, root, "pkg/web.py")
    args = [{**cursor(uri, line_of("pkg/web.py", "expr ="))[0], "maxTokens": 1024}]
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.status", arguments=[]))
    before, tokens_before = status["requests"]["explainCancelled"], status["engine"]["generated_tokens"]
    msg_id = "explain-to-cancel"
    fut = client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams(
        command="protege.explain", arguments=args), msg_id=msg_id)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wrap_future(fut)
    assert err.value.code == -32800  # RequestCancelled
    cancelled = before
    for _ in range(100):  # the server-side work stops too (it counts the cancellation when it does)
        status = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="protege.status", arguments=[]))
        cancelled = status["requests"]["explainCancelled"]
        if cancelled > before:
            break
        await asyncio.sleep(0.05)
    assert cancelled == before + 1
    assert status["engine"]["generated_tokens"] - tokens_before < 1024  # the 1024-token budget was not spent
    again = await explain(client, *cursor(uri, line_of("pkg/web.py", "expr =")))
    assert again["symbol"] == "handle_request"


async def test_bad_input_answers_clearly_and_server_keeps_serving(client: LanguageClient,
                                                                   indexed_repo: tuple[Path, Path]) -> None:
    root, _ = indexed_repo
    uri = open_file(client, root, "pkg/core.py")
    nothing = await explain(client, *cursor(uri, line_of("pkg/core.py", "LIMIT = 10"), 0))
    assert nothing["error"] and "Nothing to explain" in nothing["markdown"]
    blank = 1
    assert FILES["pkg/core.py"].split("\n")[blank] == ""
    ws_only = await explain(client, {"uri": uri, "range": {"start": {"line": blank, "character": 0},
                                                          "end": {"line": blank + 1, "character": 0}}})
    assert "only whitespace" in ws_only["error"]
    readme = open_file(client, root, "README.md", "markdown")
    not_code = await explain(client, *cursor(readme, 2))
    assert "not in a supported language" in not_code["error"]
    with pytest.raises(JsonRpcException, match="bad position"):
        await explain(client, *cursor(uri, 500))
    with pytest.raises(JsonRpcException, match="protege.explain expects"):
        await explain(client, {"range": {}})
    with pytest.raises(JsonRpcException, match="maxTokens"):
        await explain(client, {**cursor(uri, 4)[0], "maxTokens": 0})
    with pytest.raises(JsonRpcException, match="unknown document"):
        await explain(client, *cursor((root / "missing.py").as_uri(), 0))
    ok = await explain(client, *cursor(uri, line_of("pkg/core.py", "if top")))
    assert ok["symbol"] == "normalize_score"


async def test_unindexed_workspace_answers_with_hint(bare_client: LanguageClient) -> None:
    root: Path = bare_client.root  # type: ignore[attr-defined]
    uri = open_file(bare_client, root, "pkg/core.py")
    result = await explain(bare_client, *cursor(uri, line_of("pkg/core.py", "if top")))
    assert result["indexed"] is False
    assert any("protege index" in h for h in result["hints"]) and "protege index" in result["markdown"]
    assert f"pkg/core.py:{line_of('pkg/core.py', 'def normalize_score') + 1}" in result["markdown"]
    # Callers in other files need the index; the live file still answers for itself.
    assert [f["text"] for f in facts(result, "caller")] == ["No calls to `normalize_score` found in this file "
                                                            "(matched by name)"]
    assert facts(result, "doc") == []


async def test_cli_explain_with_index(indexed_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    root, cache = indexed_repo
    line = line_of("pkg/core.py", "def normalize_score") + 1
    rc = main(["explain", f"{root / 'pkg/core.py'}:{line}", "--workspace", str(root), "--cache-dir", str(cache),
               "--no-summary", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {f["path"] for f in out["facts"] if f["kind"] == "caller"} == {"pkg/report.py", "pkg/web.py"}
    assert out["summary"] is None and "--no-summary" in out["summaryNote"]
