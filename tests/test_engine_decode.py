"""The engine's decode loop on a real model: prompt-lookup drafts change speed, never the output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from server.engine import Engine, EngineOptions, _NgramDrafter


def test_drafter_proposes_what_followed_the_last_ngram_and_continues_repeats() -> None:
    d = _NgramDrafter([1, 2, 3, 4, 5, 9, 9, 1, 2, 3])
    assert d.propose(3) == [4, 5, 9]  # "1 2 3" was followed by "4 5 9"
    d.append(7)
    assert d.propose(3) == []  # "2 3 7" and "3 7" never occurred
    r = _NgramDrafter([8, 6, 6, 6])
    assert r.propose(4) == [6, 6, 6, 6]  # a run continues with its period


@pytest.mark.parametrize("decoder", ["auto", "transformers"])
def test_drafts_are_accepted_and_greedy_output_is_unchanged(fitted_model_dir: Path, decoder: str) -> None:
    plain = Engine(EngineOptions(model=str(fitted_model_dir), draft_tokens=0, decoder=decoder))
    fast = Engine(EngineOptions(model=str(fitted_model_dir), draft_tokens=8, decoder=decoder))
    plain.load()
    fast.load()
    assert plain.ready and fast.ready, (plain.error, fast.error)
    assert fast.decoder_name == ("fast" if decoder == "auto" else "transformers")
    tok = fast.tokenizer
    source = (Path(__file__).parent / "fixtures" / "server" / "inventory.py").read_text(encoding="utf-8")
    texts = []
    for cut in (source.index("def total"), source.index("def archive") + 4, len(source) // 3, len(source) // 2):
        ids = tok(source[:cut], add_special_tokens=False)["input_ids"]
        a = plain.generate(ids, 40, mode="block")
        b = fast.generate(ids, 40, mode="block")
        assert b.token_ids == a.token_ids and b.text == a.text
        texts.append(b.text)
        # The cache is consistent after drafts: a follow-up that extends the prompt matches too.
        more = ids + a.token_ids[:3]
        assert fast.generate(more, 20).token_ids == plain.generate(more, 20).token_ids
    assert fast.stats["drafted_tokens"] > 0 and fast.stats["accepted_tokens"] > 0
    assert "drafted_tokens" not in plain.stats or plain.stats["drafted_tokens"] == 0
    assert any(t.strip() for t in texts)


def test_spm_rate_comes_from_the_model_card(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    e = Engine(EngineOptions(model=str(model)))
    e.load()
    assert e.spm_rate == 0.0
    (model / "card.json").write_text(json.dumps({"spm_rate": 0.5}))
    e.load()
    assert e.spm_rate == 0.5
    (model / "card.json").write_text("{not json")
    e.load()
    assert e.ready and e.spm_rate == 0.0


def test_prompt_budget_is_capped_at_the_trained_sequence_length(tiny_model_dir: Path, tmp_path: Path) -> None:
    from server.config import ProtegeConfig
    from server.pipeline import CompletionService

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "card.json").write_text(json.dumps({"seq_len": 96}))
    e = Engine(EngineOptions(model=str(model)))
    e.load()
    assert e.trained_context == 96
    assert e.prompt_budget(1024) == 96 and e.prompt_budget(64) == 64
    service = CompletionService(ProtegeConfig(context_tokens=1024), e)
    assert service.builder.budget == 96
    (model / "card.json").write_text(json.dumps({"seq_len": "n/a"}))  # unreadable: no cap
    e.load()
    assert e.trained_context is None and e.prompt_budget(1024) == 1024


def test_retrieved_context_in_prompts_follows_the_model_card(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A model whose card says it was trained without context blocks gets none ("auto"); a model without
    a card, or trained with them, gets the retrieved snippets; the configuration can force either."""
    from server.config import ProtegeConfig
    from server.pipeline import CompletionService
    from server.prompt import ContextItem

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    asked: list[str] = []

    def provider(path: str, text: str, line: int, character: int) -> list[ContextItem]:
        asked.append(path)
        return [ContextItem(path="lib/helpers.py", text="def helper_from_elsewhere(x):\n    return x\n")]

    def served_context(mode: str) -> list[str]:
        e = Engine(EngineOptions(model=str(model)))
        e.load()
        cfg = ProtegeConfig()
        cfg.index.prompt_context = mode  # type: ignore[assignment]
        cfg.memory.enabled = False
        service = CompletionService(cfg, e, context_provider=provider)
        asked.clear()
        outcome = service.complete("file:///w/app.py", "def main():\n    x = ", 1, 8, path="app.py")
        assert outcome.generation is not None
        return list(asked)

    assert served_context("auto") == ["app.py"]  # no card: unknown, context on
    (model / "card.json").write_text(json.dumps({"seq_len": 512, "spm_rate": 0.5}))  # a starter's card
    assert served_context("auto") == [] and served_context("on") == ["app.py"]
    (model / "card.json").write_text(json.dumps({"context_rate": 0.4}))
    assert served_context("auto") == ["app.py"] and served_context("off") == []


def test_warm_up_at_load_leaves_no_trace(fitted_model_dir: Path) -> None:
    """The model is warmed at load (the first real request does not pay for first kernel runs); the
    warm-up is not counted as a request and leaves an empty cache, so outputs are those of a cold engine."""
    e = Engine(EngineOptions(model=str(fitted_model_dir)))
    e.load()
    assert e.ready and e.stats["requests"] == 0 and e._kv_ids == []
    assert e.warm_up() > 0
    tok = e.tokenizer
    ids = tok("def total(items):\n    return ", add_special_tokens=False)["input_ids"]
    cold = Engine(EngineOptions(model=str(fitted_model_dir)))
    cold.load()
    assert e.generate(ids, 20, mode="line").token_ids == cold.generate(ids, 20, mode="line").token_ids
    assert e.stats["requests"] == 1


def _eos_first_model(src: Path, dst: Path, word: str) -> int:
    """``src`` rigged so that every step ranks end-of-text first and ``word`` second; returns its id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    (word_id,) = tok(word, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    hidden = model.config.hidden_size
    v = torch.linspace(0.5, 1.5, hidden)
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream stays the input embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(v.expand_as(model.model.embed_tokens.weight))
        model.config.tie_word_embeddings = False
        head = torch.nn.Linear(hidden, model.config.vocab_size, bias=False)
        head.weight.zero_()
        head.weight[tok.eos_token_id] = 2 * v
        head.weight[word_id] = v
        model.lm_head = head
    model.save_pretrained(str(dst), safe_serialization=True)
    tok.save_pretrained(str(dst))
    return word_id


@pytest.mark.parametrize("decoder", ["auto", "transformers"])
def test_a_blank_line_gets_a_suggestion_where_the_model_would_end_at_once(
        tiny_model_dir: Path, tmp_path: Path, decoder: str) -> None:
    word_id = _eos_first_model(tiny_model_dir, tmp_path / "m", "x")
    e = Engine(EngineOptions(model=str(tmp_path / "m"), draft_tokens=0, decoder=decoder))
    e.load()
    assert e.ready, e.error
    ids = e.tokenizer("def f():\n    ", add_special_tokens=False)["input_ids"]
    plain = e.generate(ids, 8, mode="line")
    assert plain.text == "" and plain.stop_reason == "eos"
    wanted = e.generate(ids, 8, mode="line", require_text=True)
    # The best real token instead of the immediate end; once there is text, the end is taken.
    assert wanted.token_ids == [word_id] and wanted.text == "x" and wanted.stop_reason == "eos"


def test_blank_line_means_only_indentation_around_the_cursor() -> None:
    from server.pipeline import _blank_line

    assert _blank_line("def f():\n    ", "\n    return 1\n")
    assert _blank_line("x = 1\n", "")
    assert not _blank_line("def f():\n    ret", "\n")  # mid-line: the model may well end here
    assert not _blank_line("def f():\n    ", "pass\n")  # text after the cursor on its line
    assert not _blank_line("", "")  # an empty file: nothing to go on


def test_line_search_picks_a_first_line_only_when_it_is_clearly_likelier() -> None:
    from server.engine import LineSearch, default_model_path, line_score

    engine = Engine(EngineOptions(model=str(default_model_path())))
    engine.load()
    assert engine.ready, engine.error
    tok = engine.tokenizer
    source = (Path(__file__).parent / "fixtures" / "server" / "inventory.py").read_text(encoding="utf-8")
    search = LineSearch(candidates=3, below=1.0, margin=1.0)
    searched = 0
    for frac in (0.2, 0.35, 0.5, 0.65, 0.8):
        ids = tok(source[: int(len(source) * frac)], add_special_tokens=False)["input_ids"]
        greedy = engine.generate(ids, 24, mode="line")
        best = engine.generate(ids, 24, mode="line", search=search)
        assert len(greedy.alternatives) == 5 and greedy.alternatives[0][0] == greedy.token_ids[greedy.first_free]
        searched += best.searched
        if best.token_ids == greedy.token_ids:
            continue
        # Another first token won: its line beats the greedy one by more than the margin.
        assert best.token_ids[best.first_free] in [t for t, _ in greedy.alternatives[1:3]]
        assert line_score(best) > line_score(greedy) + search.margin
    assert searched > 0 and engine.stats["search_requests"] == 5
    # Forcing the first free token, and abandoning a candidate whose line can no longer win.
    ids = tok(source[: len(source) // 2], add_special_tokens=False)["input_ids"]
    greedy = engine.generate(ids, 24, mode="line")
    second = greedy.alternatives[1][0]
    forced = engine.generate(ids, 24, mode="line", first_token=second)
    assert forced.token_ids[forced.first_free] == second
    assert engine._generate(ids, 24, "line", abandon_at=0.0).stop_reason == "abandoned"
    # One candidate is plain greedy decoding.
    assert engine.generate(ids, 24, mode="line", search=LineSearch(candidates=1)).token_ids == greedy.token_ids
