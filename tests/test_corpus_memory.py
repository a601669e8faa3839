"""The corpus ∞-gram as a teacher member: causal document-order contexts, and a cross-fitted mixture that
lowers validation loss where held-out files share text with the train files (and not where they do not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill_code.corpus_memory import (
    Sentinels,
    buffer_matches,
    cross_fitted,
    document_contexts,
    observe,
    train_shard,
)
from distill_code.modeling import LlamaShape, build_llama

ROOT = Path(__file__).resolve().parents[1]
S = Sentinels(prefix=1, suffix=2, middle=3, eos=4)


def test_contexts_follow_document_order_and_stay_causal() -> None:
    psm = [1, 10, 11, 2, 20, 21, 3, 30, 31, 4, 40]
    ctx = document_contexts(psm, S)
    assert len(ctx) == len(psm)
    assert ctx[2] == [10, 11]          # inside the prefix
    assert ctx[5] == [20, 21]          # the suffix starts its own context (the middle is not known yet)
    assert ctx[6] == [10, 11]          # the middle continues the prefix, not the suffix before it
    assert ctx[8] == [10, 11, 30, 31]
    assert ctx[9] == [] and ctx[10] == [40]  # end of example: a fresh document
    spm = [1, 2, 20, 21, 3, 10, 11, 30]
    ctx = document_contexts(spm, S)
    assert ctx[3] == [20, 21]
    assert ctx[4] == []                # SPM: prefix and middle follow <fim_middle> contiguously
    assert ctx[7] == [10, 11, 30]
    # Causal: a position's context never changes when later tokens change.
    changed = psm[:7] + [99, 98, 4, 41]
    assert document_contexts(changed, S)[:7] == document_contexts(psm, S)[:7]
    assert all(len(c) <= 5 for c in document_contexts(list(range(10, 40)), S, limit=5))


def test_buffer_matches_find_the_longest_earlier_suffix() -> None:
    row = np.array([5, 6, 7, 9, 5, 6, 7, 8, 5, 6])
    got = buffer_matches(row)
    assert got[0] == (0, {})
    assert got[4] == (1, {6: 1})           # "5" seen at 0, followed by 6
    assert got[6] == (3, {9: 1})           # "5 6 7" seen at 0..2, followed by 9
    assert got[9] == (2, {7: 2})           # "5 6" twice before, both followed by 7
    assert all(length <= 3 for length, _ in buffer_matches(np.array([1] * 20), limit=3))


def _model(vocab: int):  # type: ignore[no-untyped-def]
    model = build_llama(LlamaShape(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=2, intermediate_size=64), vocab_size=vocab, eos_token_id=S.eos)
    model.eval()
    return model


def test_mixture_helps_where_validation_shares_text_with_train_files() -> None:
    rng = np.random.default_rng(0)
    vocab = 64
    phrases = [rng.integers(10, vocab, size=12) for _ in range(6)]
    # Train files: shuffled runs of shared phrases; validation blocks reuse the same phrases.
    files = [np.concatenate([phrases[i] for i in rng.integers(0, 6, size=8)]) for _ in range(20)]
    tokens = np.concatenate(files).astype(np.uint16)
    offsets = np.cumsum([0] + [len(f) for f in files])
    shard = train_shard(tokens, list(zip(offsets[:-1], offsets[1:], strict=True)))
    assert shard.n == len(tokens) + len(files) + 1
    shared = torch.tensor(np.stack([np.concatenate([phrases[i] for i in rng.integers(0, 6, size=4)])
                                    for _ in range(8)]), dtype=torch.long)
    fresh = torch.tensor(rng.integers(10, vocab, size=(8, 48)), dtype=torch.long)
    model = _model(vocab)
    got = cross_fitted(observe(model, shared, shard, S))
    assert got["positions"] == 8 * 47
    assert got["corpus_matched_fraction"] > 0.9
    assert got["mixture_loss"] < got["model_loss"] - 1.0, got  # random init knows nothing; the phrases repeat
    # Random text the train files never contain: the memory's matches are short, and the cross-fitted table
    # keeps the mixture from doing much harm (it cannot invent what the files do not say).
    other = cross_fitted(observe(model, fresh, shard, S))
    assert other["corpus_mixture_loss"] > got["corpus_mixture_loss"] + 1.0
    assert other["corpus_mixture_loss"] < other["model_loss"] + 0.25, other
    # Each block repeats phrases within itself too: the block-so-far memory alone helps, and both together
    # beat the corpus memory alone.
    assert got["buffer_mixture_loss"] < got["model_loss"] - 0.2, got
    assert got["mixture_loss"] <= got["corpus_mixture_loss"] + 0.05, got
    assert got["gate_mixture_loss"] < got["model_loss"] - 1.0, got


def test_epoch_files_name_the_file_of_every_stream_token() -> None:
    from transformers import AutoTokenizer

    from distill_code.token_data import TokenBlocks, TokenCorpus

    tok = AutoTokenizer.from_pretrained(str(ROOT / "distill_code" / "starter" / "student"))
    texts = ["".join(f"alpha_{i} = beta_{i}\n" for i in range(40)),
             "".join(f"def gamma():\n    return {i} * {i}\n" for i in range(40)),
             "".join(f"# zeta {i} omega\n" for i in range(40))]
    ids = [np.asarray(tok(t, add_special_tokens=False)["input_ids"], dtype=np.uint16) for t in texts]
    offsets = np.cumsum([0] + [len(x) for x in ids]).astype(np.int64)
    corpus = TokenCorpus(np.concatenate(ids), offsets, np.array([True, True, True]))
    blocks = TokenBlocks(corpus, "validation", tok, 64, 2, fim_rate=0.5, spm_rate=0.5, seed=3)
    stream, files = blocks.epoch_stream(0), blocks.epoch_files(0, offsets)
    assert files.shape == stream.shape and set(files.tolist()) == {0, 1, 2}
    s = Sentinels.of(tok)
    own = [set(x.tolist()) for x in ids]
    text_positions = [k for k, t in enumerate(stream.tolist()) if t not in (s.prefix, s.suffix, s.middle, s.eos)]
    assert text_positions and all(int(stream[k]) in own[int(files[k])] for k in text_positions)
    # Tokens the files do not share pin the mapping down: a wrong file index would fail here.
    only = [own[f] - own[(f + 1) % 3] - own[(f + 2) % 3] for f in range(3)]
    assert all(int(files[k]) == f for k in text_positions for f in range(3) if int(stream[k]) in only[f])
