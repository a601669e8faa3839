"""The engine decoding with repository memory mixed in: a random-init model copies what the memory knows,
memory drafts change speed (never the output), and copied spans say where they came from."""

from __future__ import annotations

from pathlib import Path

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
