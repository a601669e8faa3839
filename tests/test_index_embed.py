"""The in-house MiniLM encoder matches sentence-transformers on the shipped model (parity test)."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.embed import Embedder, default_model_path

TEXTS = [
    "def compute_tax(amount, region):\n    return round(amount * TAX_RATES[region], 2)",
    "class Cart:\n    def add_item(self, name, price):\n        self.items.append((name, price))",
    "How do I configure the cache directory?",
    "x" * 2000,  # longer than max tokens: truncated the same way
    "",
]


@pytest.mark.slow
def test_parity_with_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    ours = Embedder(max_tokens=128).encode(TEXTS)
    reference = SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)
    reference.max_seq_length = 128
    theirs = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert float((ours * theirs).sum(axis=1).min()) > 0.9999


def test_similar_code_is_closer_than_unrelated_text() -> None:
    vecs = Embedder().encode(["def add(a, b): return a + b", "def plus(x, y): return x + y",
                              "The weather in Paris is mild in spring."])
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2


def test_int8_embeddings_stay_close_to_fp32() -> None:
    fp32 = Embedder(max_tokens=128).encode(TEXTS[:3])
    int8 = Embedder(max_tokens=128, quantize=True).encode(TEXTS[:3])
    assert float((fp32 * int8).sum(axis=1).min()) > 0.95  # per-channel scales (per-tensor gave ~0.9)
    assert int8[0] @ int8[1] > int8[0] @ int8[2] + 0.2


def test_queries_may_be_longer_than_document_inputs() -> None:
    shared = "def shared_prefix(alpha, beta, gamma):\n    total = alpha + beta + gamma\n"
    a = shared + "    return sorted(words, key=len)  # sort the words by length" * 3
    b = shared + "    raise ConnectionError('the database server refused the login')" * 3
    embedder = Embedder(max_tokens=16, query_max_tokens=128)
    docs = embedder.encode([a, b])
    np.testing.assert_allclose(docs[0], docs[1], atol=1e-6)  # both cut inside the shared prefix
    qa, qb = embedder.encode_query(a), embedder.encode_query(b)
    assert qa.shape == (384,) and float(qa @ qb) < 0.99
    assert float(np.linalg.norm(qa)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("quantize", [False, True])
def test_the_encoder_runs_traced_with_the_eager_output(quantize: bool) -> None:
    """The forward runs as a TorchScript graph (no GIL between ops); batch size, width and padding stay
    dynamic and the vectors equal the eager module's."""
    import torch

    from indexing.minilm import MiniLM

    model = MiniLM(default_model_path(), 32, quantize)
    assert isinstance(model.model, torch.jit.ScriptModule)
    texts = TEXTS[:4] + ["def f():\n    pass", "a"]  # different lengths: padded batches
    traced = model.encode(texts, batch_size=4)
    model.model = model.eager
    eager = model.encode(texts, batch_size=4)
    np.testing.assert_allclose(traced, eager, atol=1e-5)
