"""Pretraining data for corpora of tens of millions of tokens: tokenised once, FIM applied to token ids.

``TokenCorpus`` is the whole corpus as one flat ``uint16`` array with each file's offsets, cached on disk
and keyed by the corpus hash and the tokenizer, so a resumed run (or the student stage) never tokenises
again. ``TokenBlocks`` cuts files into chunks at line ends, and per epoch shuffles them, applies
fill-in-the-middle to the token ids (whole lines or a short span; PSM or SPM), packs them into
``[batch, seq_len]`` blocks. An epoch is a pure function of ``(seed, epoch)``: a run resumes exactly from
``(epoch, batch)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill_code.corpus import CorpusFile
from distill_code.fim import template_for
from distill_code.pretrain_data import BlockStream

log = logging.getLogger(__name__)

_LINE_CHOICES = np.array([1, 1, 1, 2, 3, 4])
_SPAN_TOKENS = 48  # a mid-line span of up to ~160 characters


def tokenizer_digest(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


class TokenCorpus:
    """Every corpus file's token ids, concatenated; ``offsets[i]:offsets[i+1]`` is file ``i``."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, validation: np.ndarray) -> None:
        self.tokens = tokens
        self.offsets = offsets
        self.validation = validation

    def ranges(self, split: str) -> list[tuple[int, int]]:
        want = split == "validation"
        return [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in range(len(self.validation))
                if bool(self.validation[i]) == want]

    @classmethod
    def build(cls, entries: Sequence[CorpusFile], texts: dict[str, str], tokenizer: Any, cache: Path,
              corpus_sha256: str) -> TokenCorpus:
        """Load the cached token array for this corpus and tokenizer, or tokenise and cache it. Fills each
        entry's ``tokens`` count either way."""
        key = {"corpus_sha256": corpus_sha256, "tokenizer": tokenizer_digest(tokenizer), "files": len(entries)}
        meta_path = cache / "meta.json"
        if meta_path.exists():
            try:
                if json.loads(meta_path.read_text()) == key:
                    cached = cls._read(cache)
                    if len(cached.offsets) == len(entries) + 1:
                        for e, a, b in zip(entries, cached.offsets[:-1], cached.offsets[1:], strict=True):
                            e.tokens = int(b - a)
                        log.info("token cache: %d files, %.1fM tokens", len(entries), len(cached.tokens) / 1e6)
                        return cached
            except (OSError, ValueError) as exc:
                log.warning("token cache at %s is unreadable (%s); tokenising again", cache, exc)
        if len(tokenizer) > np.iinfo(np.uint16).max:
            raise ValueError(f"vocabulary of {len(tokenizer)} tokens does not fit the uint16 token cache")
        parts: list[np.ndarray] = []
        lengths: list[int] = []
        for i in range(0, len(entries), 256):
            batch = entries[i:i + 256]
            enc = tokenizer([texts[e.path] for e in batch], add_special_tokens=False)["input_ids"]
            for e, ids in zip(batch, enc, strict=True):
                e.tokens = len(ids)
                lengths.append(len(ids))
                parts.append(np.asarray(ids, dtype=np.uint16))
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
        offsets = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        validation = np.array([e.split == "validation" for e in entries], dtype=bool)
        cache.mkdir(parents=True, exist_ok=True)
        for name, arr in (("tokens.npy", tokens), ("offsets.npy", offsets), ("validation.npy", validation)):
            tmp = cache / (name + ".tmp.npy")
            np.save(tmp, arr)
            tmp.replace(cache / name)
        meta_path.write_text(json.dumps(key))
        log.info("tokenised %d files: %.1fM tokens", len(entries), len(tokens) / 1e6)
        return cls(tokens, offsets, validation)

    @classmethod
    def _read(cls, cache: Path) -> TokenCorpus:
        tokens = np.load(cache / "tokens.npy", mmap_mode="r")
        offsets = np.load(cache / "offsets.npy")
        validation = np.load(cache / "validation.npy")
        if tokens.dtype != np.uint16 or len(offsets) != len(validation) + 1 or int(offsets[-1]) != len(tokens):
            raise ValueError("its tokens, offsets and validation arrays do not agree")
        return cls(np.asarray(tokens), offsets, validation)

    @classmethod
    def load(cls, cache: Path, tokenizer: Any) -> TokenCorpus:
        """The token cache at ``cache`` on its own, without the corpus it was made from (a machine with
        no network, no corpus sources). Raises ``ValueError`` naming the problem when the cache is missing,
        unreadable, or was made with another tokenizer."""
        meta_path = cache / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"no readable token cache at {cache} ({exc}); build it with a recipe whose "
                             "data is \"tokens\" first") from exc
        want = tokenizer_digest(tokenizer)
        if meta.get("tokenizer") != want:
            raise ValueError(f"the token cache at {cache} was made with tokenizer {meta.get('tokenizer')!r}, "
                             f"not this recipe's ({want!r}); point 'tokenizer' at the one it was made with")
        try:
            corpus = cls._read(cache)
        except (OSError, ValueError) as exc:
            raise ValueError(f"the token cache at {cache} is unreadable: {exc}") from exc
        if len(corpus.validation) != meta.get("files"):
            raise ValueError(f"the token cache at {cache} holds {len(corpus.validation)} files, its meta.json "
                             f"says {meta.get('files')}")
        log.info("token cache (alone): %d files, %.1fM tokens", len(corpus.validation), len(corpus.tokens) / 1e6)
        return corpus

    def texts(self, tokenizer: Any, split: str) -> list[str]:
        """The files of ``split`` decoded back to text (the byte-level tokenizer round-trips exactly)."""
        return [tokenizer.decode(self.tokens[a:b].tolist()) for a, b in self.ranges(split)]


def newline_table(tokenizer: Any) -> np.ndarray:
    """``table[id]`` is True when token ``id`` decodes to text containing a line break."""
    table = np.zeros(len(tokenizer), dtype=bool)
    for tok, i in tokenizer.get_vocab().items():
        if i < len(table) and "\n" in tokenizer.convert_tokens_to_string([tok]):
            table[i] = True
    return table


def chunk_ranges(tokens: np.ndarray, ranges: Sequence[tuple[int, int]], is_newline: np.ndarray,
                 max_len: int) -> np.ndarray:
    """Cut each file range into pieces: a piece is its first token and at most ``max_len`` more, cut after
    the last line end among those (else after ``max_len`` tokens). Packing does not need pieces to fit a
    block exactly; the recipe's data stream depends on this rule, so it stays as the v2 run began with it."""
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        while end - start > max_len:
            window = tokens[start + 1:start + max_len + 1]
            nl = np.flatnonzero(is_newline[window])
            cut = start + 1 + int(nl[-1]) + 1 if len(nl) else start + max_len
            out.append((start, cut))
            start = cut
        if end > start:
            out.append((start, end))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


class TokenBlocks(BlockStream):
    """Per-epoch stream of ``[batch, seq_len]`` blocks from a ``TokenCorpus`` split, with token-level FIM.

    Same interface as ``PackedBlocks`` (``batches``, ``fixed_blocks``, ``chunks``)."""

    def __init__(self, corpus: TokenCorpus, split: str, tokenizer: Any, seq_len: int, batch_size: int,
                 fim_rate: float, spm_rate: float, seed: int, family: str = "starcoder") -> None:
        self.tokens = corpus.tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.fim_rate = fim_rate
        self.spm_rate = spm_rate
        self.seed = seed
        t = template_for(family)
        ids = [tokenizer.convert_tokens_to_ids(s) for s in (t.prefix, t.suffix, t.middle, t.eos)]
        unk = getattr(tokenizer, "unk_token_id", None)
        if any(i is None or i == unk for i in ids):
            raise ValueError(f"tokenizer lacks the FIM tokens of the {family!r} template")
        self.fim_prefix, self.fim_suffix, self.fim_middle, self.eos = ids
        self.is_newline = newline_table(tokenizer)
        self.chunks = chunk_ranges(self.tokens, corpus.ranges(split), self.is_newline, seq_len - 4)
        if len(self.chunks) == 0:
            raise ValueError(f"no text to train on; the corpus {split} split is empty")

    def _example(self, start: int, end: int, u: np.ndarray, n_lines: int) -> list[np.ndarray]:
        c = self.tokens[start:end]
        n = len(c)
        if u[0] >= self.fim_rate or n < 2:
            return [c, np.array([self.eos], dtype=np.uint16)]
        nl = np.flatnonzero(self.is_newline[c])
        if len(nl) >= 1 and u[1] < 0.5:  # whole lines: what line completion asks for
            bounds = np.concatenate(([0], nl + 1))
            bounds = bounds[bounds < n]
            k = int(u[2] * len(bounds))
            a = int(bounds[k])
            b = int(bounds[k + n_lines]) if k + n_lines < len(bounds) else n
        else:  # a short span inside a line
            a = int(u[2] * (n + 1))
            b = min(n, a + 1 + int(u[3] * _SPAN_TOKENS))
        pre, mid, suf = c[:a], c[a:b], c[b:]
        p, s, m, e = (np.array([x], dtype=np.uint16) for x in (self.fim_prefix, self.fim_suffix,
                                                                  self.fim_middle, self.eos))
        if u[4] < self.spm_rate:
            return [p, s, suf, m, pre, mid, e]
        return [p, pre, s, suf, m, mid, e]

    def _epoch_examples(self, epoch: int) -> Any:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.chunks))
        u = rng.random((len(order), 5))
        n_lines = _LINE_CHOICES[rng.integers(0, len(_LINE_CHOICES), len(order))]
        for j, i in enumerate(order):
            start, end = self.chunks[i]
            yield int(start), self._example(int(start), int(end), u[j], int(n_lines[j]))

    def epoch_stream(self, epoch: int) -> np.ndarray:
        return np.concatenate([p for _, parts in self._epoch_examples(epoch) for p in parts])

    def epoch_files(self, epoch: int, offsets: np.ndarray) -> np.ndarray:
        """For every token of ``epoch_stream(epoch)``, the index of the corpus file it came from (sentinels
        count as their example's file); ``offsets`` are the ``TokenCorpus``'s."""
        starts, lengths = [], []
        for start, parts in self._epoch_examples(epoch):
            starts.append(start)
            lengths.append(sum(len(p) for p in parts))
        files = np.searchsorted(offsets, np.asarray(starts, dtype=np.int64), side="right") - 1
        return np.repeat(files, lengths)

    def epoch_blocks(self, epoch: int) -> torch.Tensor:
        stream = self.epoch_stream(epoch)
        n = len(stream) // self.seq_len
        if n == 0:
            raise ValueError(f"corpus too small for one block of {self.seq_len} tokens")
        return torch.from_numpy(stream[: n * self.seq_len].astype(np.int64)).view(n, self.seq_len)
