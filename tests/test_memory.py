"""Repository memory (indexing/memory.py) with the shipped starter tokenizer, and the mixture it feeds
(distill_code/memory_mix.py): known continuations and counts, secrets, changes, corruption, the fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_code.memory_mix import LENGTH_EDGES, MixWeights, Observation, fit_weights, load_weights, mix
from indexing.memory import BUFFER_BLOCK_LINES, SEP, RepoMemory, Shard, query_shards, suffix_array

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ROOT / "distill_code" / "starter" / "student"))


def make_memory(tok, cache: Path | None = None) -> RepoMemory:
    return RepoMemory(lambda ts: [list(x) for x in tok(ts, add_special_tokens=False)["input_ids"]] if ts else [],
                      "starter", cache)


def ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text(
        "def frobnicate(widget):\n    return widget.spin_quickly(7)\n\n"
        "def other(widget):\n    return widget.spin_quickly(7)\n", encoding="utf-8")
    (root / "pkg" / "b.py").write_text("def twirl(widget):\n    return widget.spin_slowly(3)\n", encoding="utf-8")
    (root / "settings.py").write_text('AWS_KEY = "AKIAIOSFODNN7EXAMPLE"\nDEBUG = True\n', encoding="utf-8")
    (root / ".gitignore").write_text("ignored/\n", encoding="utf-8")
    (root / "ignored").mkdir()
    (root / "ignored" / "c.py").write_text("widget.spin_secretly(9)\n", encoding="utf-8")
    return root


def next_id(tok, context: str, word: str) -> int:
    """The token that follows ``context`` when ``word`` comes next, as a whole file tokenizes it."""
    before = ids(tok, context)
    return ids(tok, context + word)[len(before)]


def brute(files: list[list[int]], ctx: list[int]) -> tuple[int, dict[int, int]]:
    best, nxt = 0, {}
    for n in range(1, len(ctx) + 1):
        counts: dict[int, int] = {}
        for f in files:
            for i in range(len(f) - n):
                if f[i: i + n] == ctx[-n:]:
                    counts[f[i + n]] = counts.get(f[i + n], 0) + 1
        if counts:
            best, nxt = n, counts
    return best, nxt


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), max_size=30), min_size=1, max_size=4),
       st.lists(st.integers(0, 4), min_size=1, max_size=10))
def test_longest_match_and_next_counts_equal_brute_force(files: list[list[int]], ctx: list[int]) -> None:
    shard = Shard.from_token_lists((f"f{i}", "", f) for i, f in enumerate(files))
    m = query_shards([shard], ctx)
    assert (m.length, m.next_counts) == brute(files, ctx)


def test_matches_never_cross_files_and_shards_pool_equal_lengths() -> None:
    a = Shard.from_token_lists([("a", "", [1, 2]), ("b", "", [3, 9])])
    assert query_shards([a], [1, 2]).length == 0  # 2 ends file a: [3] is another file
    b = Shard.from_token_lists([("c", "", [5, 1, 2, 7])])
    c = Shard.from_token_lists([("d", "", [1, 2, 8, 1, 2, 7])])
    m = query_shards([b, c], [1, 2])
    assert m.length == 2 and m.next_counts == {7: 2, 8: 1} and m.count == 3


def test_workspace_memory_knows_continuations_counts_and_where(tok, repo: Path) -> None:
    mem = make_memory(tok)
    stats = mem.build(repo)
    assert stats.files == 4 and stats.tokens > 20  # a.py, b.py, settings.py, .gitignore; not ignored/
    m = mem.query(ids(tok, "    return widget.spin_"))
    assert m.count == 3
    quickly, slowly = next_id(tok, "widget.spin_", "quickly"), next_id(tok, "widget.spin_", "slowly")
    assert m.next_counts.get(quickly) == 2 and m.next_counts.get(slowly) == 1
    shard, pos = next(w for w in m.where if int(w[0].tokens[w[1]]) == slowly)
    span, _ = shard.locate(pos)
    assert span.path == "pkg/b.py"
    assert "secretly" not in tok.decode(mem.shard.tokens[mem.shard.tokens < 2**31 - 1].tolist())


def test_masked_secret_never_enters_the_memory(tok, repo: Path) -> None:
    mem = make_memory(tok)
    mem.build(repo)
    text = tok.decode(mem.shard.tokens[mem.shard.tokens < 2**31 - 1].tolist())
    assert "DEBUG = True" in text
    assert "AKIAIOSFODNN7EXAMPLE" not in text


def test_changed_deleted_and_renamed_files_change_answers(tok, repo: Path) -> None:
    mem = make_memory(tok)
    mem.build(repo)
    ctx = ids(tok, "def twirl(widget):\n    return widget.spin_")
    slowly = next_id(tok, "widget.spin_", "slowly")
    wildly = next_id(tok, "widget.spin_", "wildly")
    assert mem.query(ctx).best() == slowly
    (repo / "pkg" / "b.py").write_text("def twirl(widget):\n    return widget.spin_wildly(3)\n", encoding="utf-8")
    stats = mem.update(repo, ["pkg/b.py"])
    assert stats.tokenized_files == 1  # the other files' tokens were reused
    assert mem.query(ctx).best() == wildly
    (repo / "pkg" / "b.py").rename(repo / "pkg" / "renamed.py")
    mem.update(repo, ["pkg/b.py", "pkg/renamed.py"])
    m = mem.query(ctx)
    assert m.best() == wildly
    assert {mem.shard.locate(p)[0].path for s, p in m.where} == {"pkg/renamed.py"}
    (repo / "pkg" / "renamed.py").unlink()
    mem.update(repo, ["pkg/renamed.py"])
    assert mem.query(ctx).length < len(ctx) - 2
    assert "pkg/renamed.py" not in {f.path for f in mem.shard.files}


def test_the_open_documents_saved_copy_gives_way_to_its_buffer(tok, repo: Path) -> None:
    mem = make_memory(tok)
    mem.build(repo)
    ctx = ids(tok, "def twirl(widget):\n    return widget.spin_")
    slowly = next_id(tok, "widget.spin_", "slowly")
    assert mem.query(ctx).best() == slowly  # b.py's saved copy
    assert mem.relative((repo / "pkg" / "b.py").as_uri()) == "pkg/b.py"
    assert mem.relative("/elsewhere/b.py") is None
    assert mem.query(ctx, exclude="pkg/b.py").length < len(ctx) - 2  # only b.py had the whole context
    buffer = mem.buffer_shard("def twirl(widget):\n    return widget.spin_oddly(3)\n    return widget.spin_", 2)
    assert mem.query(ctx, buffer, exclude="pkg/b.py").best() == next_id(tok, "widget.spin_", "oddly")


def test_saved_memory_loads_and_a_corrupt_one_is_rebuilt(tok, repo: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    first = make_memory(tok, cache)
    first.build(repo)
    again = make_memory(tok, cache)
    assert again.load() and again.stats.tokens == first.stats.tokens
    assert np.array_equal(again.shard.sa, first.shard.sa)
    saved = cache / "memory" / "starter" / "memory.npz"
    saved.write_bytes(b"not a zip file")
    broken = make_memory(tok, cache)
    assert not broken.load()
    assert "unusable" in broken.stats.reason and "rebuilding" in caplog.text
    assert broken.query(ids(tok, "widget.spin")).length == 0  # no memory meanwhile, no error
    broken.build(repo)
    assert broken.query(ids(tok, "widget.spin")).length >= 3
    assert make_memory(tok, cache).load()  # and it was saved again
    assert not make_memory(tok, tmp_path / "empty").load()


def test_buffer_shard_skips_the_cursor_line_and_is_cached(tok) -> None:
    mem = make_memory(tok)
    text = "x = compute_total(alpha)\ny = compute_tot\nz = 1\n"
    shard = mem.buffer_shard(text, 1)
    assert shard is not None and [f.path for f in shard.files] == ["<buffer:before>", "<buffer:after>"]
    m = mem.query(ids(tok, "y = compute_")[1:], shard)
    assert m.length >= 2 and m.best() == next_id(tok, "x = compute_", "total")
    assert mem.buffer_shard(text.replace("compute_tot\n", "compute_tota\n"), 1) is shard  # typing on the line


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=0, max_size=80), st.booleans())
def test_suffix_array_orders_as_ranges_compares(raw: list[int], wide: bool) -> None:
    # The 2-byte fast path and the 4-byte one (ids past 0xFFFF) both give the order ranges() searches:
    # SEP above every id, a shorter suffix first.
    tokens = np.array([SEP if t == 6 else t + (70_000 if wide else 0) for t in raw], dtype=np.int32)
    key = [[SEP if t == SEP else int(t) for t in tokens[i:]] for i in range(len(tokens))]
    assert suffix_array(tokens).tolist() == sorted(range(len(tokens)), key=lambda i: key[i])


def test_buffer_blocks_stay_put_when_the_cursor_moves(tok) -> None:
    # Blocks end at fixed document lines, so moving the cursor tokenizes only the blocks around it.
    calls: list[int] = []

    def encode(texts: list[str]) -> list[list[int]]:
        calls.append(len(texts))
        return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]

    mem = RepoMemory(encode, "starter")
    text = "\n".join(f"value_{i} = compute(item_{i})" for i in range(10 * BUFFER_BLOCK_LINES))
    mem.buffer_shard(text, 3 * BUFFER_BLOCK_LINES + 5)
    first = sum(calls)
    calls.clear()
    shard = mem.buffer_shard(text, 6 * BUFFER_BLOCK_LINES + 9)
    assert first >= 10 and sum(calls) <= 4  # the old and the new cursor block, split at the cursor
    assert shard is not None
    m = mem.query(ids(tok, "value_7 = compute(item_")[1:], shard)
    assert m.best() == next_id(tok, "value_7 = compute(item_", "7")


def test_mix_is_a_distribution_and_weights_follow_buckets() -> None:
    p = torch.softmax(torch.randn(50), -1)
    out = mix(p.clone(), {3: 2, 7: 1, 999: 5}, 0.6)  # 999 is outside the model's output: ignored
    assert math.isclose(float(out.sum()), 1.0 - 0.6 * 5 / 8, rel_tol=1e-5)
    ok = mix(p.clone(), {3: 2, 7: 1}, 0.6)
    assert math.isclose(float(ok.sum()), 1.0, rel_tol=1e-5)
    assert math.isclose(float(ok[3]), 0.4 * float(p[3]) + 0.6 * 2 / 3, rel_tol=1e-5)
    w = MixWeights(tuple(i / 10 for i in range(9)), tuple(0.0 for _ in range(9)), tuple(0.01 for _ in range(9)))
    assert w.weight(0, True) == 0.0 and w.weight(1, True) == 0.0 and w.weight(5, True) == 0.3
    assert w.weight(100, True) == 0.8 and w.weight(100, False) == 0.0
    assert w.weight(5, True, model_top=0.9) == 0.01  # a confident model is trusted over the memory


def test_fit_trusts_a_memory_that_is_right_and_not_one_that_is_wrong() -> None:
    obs = [Observation(8, True, 0.1, 1.0) for _ in range(50)] + [Observation(2, False, 0.4, 0.0) for _ in range(50)]
    obs += [Observation(8, True, 0.9, 0.0, model_top=0.9) for _ in range(50)]
    w = fit_weights(obs)
    assert w.weight(8, True) >= 0.95
    assert w.weight(2, False) == 0.0
    assert w.weight(8, True, model_top=0.9) == 0.0  # fitted apart: confident and right, the memory wrong
    assert all(a <= b for a, b in zip(w.sparse, w.sparse[1:], strict=False))  # never trusts longer matches less


def test_weights_load_from_model_dir_and_config_override(tmp_path: Path) -> None:
    table = {"sparse": [0.5] * len(LENGTH_EDGES), "dense": [0.25] * len(LENGTH_EDGES)}
    (tmp_path / "memory_mix.json").write_text(json.dumps(table), encoding="utf-8")
    w, warn = load_weights(tmp_path)
    assert warn is None and w.weight(3, True) == 0.5 and w.weight(3, False) == 0.25
    w, warn = load_weights(tmp_path, {"sparse": [2.0]})
    assert warn is not None and "sparse" in warn and w.weight(3, True) == 0.5  # bad override: the model's table
    (tmp_path / "memory_mix.json").write_text("{broken", encoding="utf-8")
    w, warn = load_weights(tmp_path)
    assert warn is not None and "unusable" in warn and w.source == "default"


def test_saved_status_reads_meta_without_numpy_and_reports_corruption(tmp_path: Path) -> None:
    import json as _json

    import numpy as _np

    from indexing.memory_status import npy_bytes, saved_status

    meta = {"tokenizer": "tok-1", "files": [["a.py", "d", 0, 3]], "tokens": 3, "build_s": 0.1, "mb": 0.0,
            "built_at": 1.0}
    good = tmp_path / "memory" / "tok-1"
    good.mkdir(parents=True)
    with open(good / "memory.npz", "wb") as fh:
        _np.savez(fh, tokens=_np.arange(3, dtype=_np.int32),
                  meta=_np.frombuffer(_json.dumps(meta).encode("utf-8"), dtype=_np.uint8))
    assert _json.loads(npy_bytes(good / "memory.npz", "meta")) == meta
    bad = tmp_path / "memory" / "tok-2"
    bad.mkdir()
    (bad / "memory.npz").write_bytes(b"PK\x03\x04 not really a zip")
    status = saved_status(tmp_path)
    assert status[0]["tokens"] == 3 and status[0]["files"] == 1 and status[0]["tokenizer"] == "tok-1"
    assert "unreadable" in status[1]["error"]
    with pytest.raises(ValueError, match="not uint8"):
        npy_bytes(good / "memory.npz", "tokens")


def test_fit_stop_picks_the_threshold_that_maximises_the_score() -> None:
    from distill_code.memory_mix import STOP_GRID, cut_unsure, fit_stop

    def em(preds: list[str], targets: list[str]) -> float:
        return sum(p == t for p, t in zip(preds, targets, strict=True)) / len(targets)

    # "None" then an unsure ", x" (p 0.1): the target is the sure part, so cutting at 0.15 wins.
    unsure_tail = ("None, x", [0.9, 0.1, 0.05], [4, 5, 7], 0, "None")
    # A right suggestion whose second token is only fairly sure (p 0.3): a threshold above it loses it.
    fair = ("a + b", [0.8, 0.3, 0.9], [1, 3, 5], 0, "a + b")
    best, scores = fit_stop([unsure_tail, fair], em)
    assert scores[0.0] == 0.5 and scores[best] == 1.0 and 0.1 < best <= 0.3
    assert set(scores) == set(STOP_GRID)
    # A gain under min_gain is noise: never stopping stays.
    assert fit_stop([unsure_tail, fair], em, min_gain=0.6)[0] == 0.0
    # Forced (healed) tokens never stop, nor does the first free one.
    assert cut_unsure("abc", [0.01, 0.01, 0.9], [1, 2, 3], 1, 0.5) == "abc"
    assert cut_unsure("abc", [0.9, 0.9, 0.01], [1, 2, 3], 0, 0.5) == "ab"
    assert cut_unsure("abc", [0.9, 0.9, 0.01], [1, 2, 3], 0, 0.0) == "abc"
