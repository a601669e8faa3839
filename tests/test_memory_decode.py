"""The engine decoding with repository memory mixed in: a random-init model copies what the memory knows,
memory drafts change speed (never the output), and copied spans say where they came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill_code.memory_mix import LENGTH_EDGES, MixWeights
from indexing.memory import Shard, query_shards
from server.engine import Engine, EngineOptions, MemoryHook

LINE = "    total = compute_inventory_weight(items, scale=precise_scale_factor)\n"


def hook(tok, prefix: str, weights: MixWeights) -> tuple[MemoryHook, Shard]:
    other = "def helper(items):\n" + LINE + "    return total\n"
    shard = Shard.from_token_lists([("pkg/helper.py", "", tok(other, add_special_tokens=False)["input_ids"])])
    ctx = list(tok(prefix, add_special_tokens=False)["input_ids"])
    return MemoryHook(query=lambda ids: query_shards([shard], ids), context_ids=ctx, weights=weights), shard


def test_memory_steers_a_random_model_and_drafts_never_change_the_output(tiny_model_dir: Path) -> None:
    trusting = MixWeights(tuple(0.99 for _ in LENGTH_EDGES), tuple(0.99 for _ in LENGTH_EDGES))
    plain = Engine(EngineOptions(model=str(tiny_model_dir), draft_tokens=0))
    fast = Engine(EngineOptions(model=str(tiny_model_dir), draft_tokens=8))
    plain.load()
    fast.load()
    tok = fast.tokenizer
    prefix = "def weigh(items):\n    total = compute_inventory"
    prompt = list(tok(prefix, add_special_tokens=False)["input_ids"])
    alone = plain.generate(prompt, 30, mode="line")
    h, shard = hook(tok, prefix, trusting)
    a = plain.generate(prompt, 30, mode="line", memory=h)
    b = fast.generate(prompt, 30, mode="line", memory=h)
    assert a.text.startswith("_weight(items, scale=precise_scale_factor)"), a.text
    assert alone.text != a.text  # the random model alone does not know it
    assert b.token_ids == a.token_ids
    assert fast.stats["accepted_tokens"] > 0  # the copied span was verified in few forward passes
    assert b.memory_tokens >= 10
    assert b.copied and b.copied[0].shard is shard and b.copied[0].tokens >= 5
    span, _ = shard.locate(b.copied[0].pos)
    assert span.path == "pkg/helper.py"


def test_zero_weights_leave_the_model_alone(tiny_model_dir: Path) -> None:
    never = MixWeights(tuple(0.0 for _ in LENGTH_EDGES), tuple(0.0 for _ in LENGTH_EDGES))
    e = Engine(EngineOptions(model=str(tiny_model_dir)))
    e.load()
    tok = e.tokenizer
    prefix = "def weigh(items):\n    total = compute_inventory"
    prompt = list(tok(prefix, add_special_tokens=False)["input_ids"])
    h, _ = hook(tok, prefix, never)
    assert e.generate(prompt, 20, memory=h).token_ids == e.generate(prompt, 20).token_ids


def test_stop_below_cuts_the_unsure_tail_exactly_where_the_fit_says(tiny_model_dir: Path) -> None:
    from dataclasses import replace

    from distill_code.memory_mix import cut_unsure

    trusting = MixWeights(tuple(0.99 for _ in LENGTH_EDGES), tuple(0.99 for _ in LENGTH_EDGES))
    e = Engine(EngineOptions(model=str(tiny_model_dir), draft_tokens=8))
    e.load()
    tok = e.tokenizer
    # The memory knows how the line goes on, then the random model is on its own (low probabilities).
    prefix = "def weigh(items):\n    total = compute_inventory"
    prompt = list(tok(prefix, add_special_tokens=False)["input_ids"])
    h, _ = hook(tok, prefix, trusting)
    full = e.generate(prompt, 60, mode="block", memory=h)
    assert len(full.token_probs) == len(full.token_ends) == full.tokens and full.first_free == 0
    assert full.token_ends == sorted(full.token_ends) and full.token_ends[-1] == len(full.text)
    assert min(full.token_probs[:20]) > 0.9  # the copied span is sure
    threshold = 0.5
    assert min(full.token_probs[1:]) < threshold, full.token_probs  # and the random model's tail is not
    h2, _ = hook(tok, prefix, replace(trusting, stop_below=threshold))
    cut = e.generate(prompt, 60, mode="block", memory=h2)
    assert cut.stop_reason == "unsure"
    assert cut.token_ids == full.token_ids[:cut.tokens] and 20 < cut.tokens < full.tokens
    assert cut.text.endswith("return total\n")
    assert all(p >= threshold for p in cut.token_probs[1:])
    # The benchmark's offline cut of the uncut run gives the same text as stopping while decoding.
    assert cut_unsure(full.text, full.token_probs, full.token_ends, full.first_free, threshold) == cut.text
    # A threshold of 0 never stops; the weights round-trip through memory_mix.json.
    assert MixWeights.from_dict(replace(trusting, stop_below=threshold).to_dict(), "t").stop_below == threshold
    with pytest.raises(ValueError, match="stop_below"):
        MixWeights.from_dict({"stop_below": 1.5}, "t")
