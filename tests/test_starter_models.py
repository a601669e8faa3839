"""The shipped starter models load, fit their size budgets, and complete held-out lines better than random init."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
import torch
from conftest import editor_client
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from distill_code.model_card import LineExample, evaluate_lines, heldout_lines
from distill_code.modeling import LlamaShape, build_llama, count_parameters, load_causal_lm
from distill_code.starter import STARTER_DIR, default_model_dir

SIZE_BUDGET_MB = {"student": 20.0, "teacher": 100.0}
SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "server.cli", "serve"], client_factory=editor_client)


@pytest.fixture(scope="module")
def heldout() -> list[LineExample]:
    """A few dozen lines from the manifest's validation files, read from this interpreter's stdlib."""
    manifest = json.loads((STARTER_DIR / "corpus_manifest.json").read_text())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for f in manifest["files"]:
        if f["split"] != "validation":
            continue
        p = stdlib / f["path"].split("/", 1)[1]
        if p.exists():
            text = p.read_text(encoding="utf-8")
            # Only files byte-identical to what was held out: another CPython could have seen them in training.
            if hashlib.sha256(text.encode("utf-8")).hexdigest() == f["sha256"]:
                texts.append(text)
    if len(texts) < 5:
        pytest.skip("this interpreter's stdlib differs from the one the starter models were trained on")
    return heldout_lines(texts, 24, seed=7)


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_shipped_model_is_fp16_within_budget_with_card(role: str) -> None:
    d = default_model_dir(role)
    size_mb = sum(f.stat().st_size for f in d.glob("*.safetensors")) / 1e6
    assert 0 < size_mb <= SIZE_BUDGET_MB[role]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["dtype"] == "float16" and cfg["tie_word_embeddings"] is True
    figures = json.loads((d / "card.json").read_text())
    model, _ = load_causal_lm(d)
    assert figures["parameters"] == count_parameters(model)
    assert f"{figures['parameters']:,}" in (d / "MODEL_CARD.md").read_text()


def test_student_is_four_to_six_times_smaller_than_teacher() -> None:
    s = json.loads((default_model_dir("student") / "card.json").read_text())["parameters"]
    t = json.loads((default_model_dir("teacher") / "card.json").read_text())["parameters"]
    assert 3.5 <= t / s <= 6.5


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_shipped_model_beats_random_init_on_heldout_lines(role: str, heldout: list[LineExample]) -> None:
    model, tok = load_causal_lm(default_model_dir(role))
    cfg = model.config
    shape = LlamaShape(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                       num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                       intermediate_size=cfg.intermediate_size, tie_word_embeddings=True)
    baseline = build_llama(shape, vocab_size=cfg.vocab_size, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, seed=3)
    trained = evaluate_lines(model, tok, heldout)
    random_init = evaluate_lines(baseline, tok, heldout)
    diffs = [a - b for a, b in zip(trained["per_line_edit_similarity"], random_init["per_line_edit_similarity"], strict=True)]
    mean = statistics.fmean(diffs)
    stderr = statistics.stdev(diffs) / math.sqrt(len(diffs))
    # The margin is measured: the paired improvement must clear two standard errors of itself.
    assert mean > 2 * stderr, (trained["edit_similarity"], random_init["edit_similarity"], stderr)

    # And per-token loss on the held-out lines in their FIM prompts is lower than the random model's.
    from distill_code.fim import template_for

    tpl = template_for("starcoder")
    texts = [tpl.psm(ex.prefix, ex.suffix) + ex.line + "\n" for ex in heldout[:8]]

    def loss(m: torch.nn.Module) -> float:
        total = 0.0
        for t in texts:
            ids = tok(t, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                total += float(m(input_ids=ids, labels=ids).loss)
        return total / len(texts)

    assert loss(model) < loss(baseline) - 1.0


@pytest_lsp.fixture(config=SERVER, scope="module")
async def default_client(lsp_client: LanguageClient, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ws = tmp_path_factory.mktemp("starter-workspace")
    # No "model" option: the server must pick the shipped starter student by itself.
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("neovim"), root_uri=ws.as_uri(),
        initialization_options={"debounceMs": 0, "index": {"enabled": False}}))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_serve_uses_the_shipped_student_by_default(default_client: LanguageClient) -> None:
    uri = "file:///tmp/protege-starter-default/util.py"
    text = "import os\n\n\ndef read_text(path):\n    with open(path) as f:\n        \n"
    default_client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    result = await default_client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=5, character=8),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(result, types.InlineCompletionList)
    status: dict[str, Any] = await default_client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="protege.status", arguments=[]))
    assert status["model"]["state"] == "ready", status["model"]
    assert Path(status["model"]["path"]).resolve() == default_model_dir("student").resolve()
    card = json.loads((default_model_dir("student") / "card.json").read_text())
    assert status["model"]["parameters"] == card["parameters"]


@pytest.mark.asyncio(loop_scope="module")
async def test_starter_teacher_is_served_by_name(default_client: LanguageClient) -> None:
    """``model: starter:teacher`` switches the running server to the shipped teacher (no path needed)."""
    import asyncio

    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"protege": {"model": "starter:teacher"}}))
    status: dict[str, Any] = {}
    for _ in range(300):
        status = await default_client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="protege.status", arguments=[]))
        if status["model"]["state"] in ("ready", "error") and "teacher" in str(status["model"]["path"]):
            break
        await asyncio.sleep(0.1)
    assert status["model"]["state"] == "ready", status["model"]
    assert Path(status["model"]["path"]).resolve() == default_model_dir("teacher").resolve()
    card = json.loads((default_model_dir("teacher") / "card.json").read_text())
    assert status["model"]["parameters"] == card["parameters"]
    assert status["model"]["promptContext"] is False  # its card: pretrained on files, no retrieved snippets
    uri = "file:///tmp/protege-starter-default/teacher.py"
    default_client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text="import os\n\n\ndef join_all(parts):\n    return os.path.")))
    result = await default_client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=4, character=19),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(result, types.InlineCompletionList) and result.items
