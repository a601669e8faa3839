"""Pretraining examples: source chunks turned into FIM (PSM/SPM) or plain samples and packed into blocks.

Prompts are built only through ``distill_code.fim`` so the starter models are trained on exactly
the layout the server sends them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from distill_code.fim import FimTemplate, template_for


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into line-aligned pieces of at most ~``max_chars`` characters (long lines are cut)."""
    chunks: list[str] = []
    cur: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:  # a minified line: cut it rather than drop the file
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if size + len(line) > max_chars and cur:
            chunks.append("".join(cur))
            cur, size = [], 0
        cur.append(line)
        size += len(line)
    if cur and "".join(cur).strip():
        chunks.append("".join(cur))
    return chunks


def fim_split(chunk: str, rng: random.Random) -> tuple[str, str, str]:
    """Choose (prefix, middle, suffix): half the time whole lines (what line completion asks for), else a
    short character span (mid-line completion)."""
    lines = chunk.splitlines(keepends=True)
    if len(lines) >= 2 and rng.random() < 0.5:
        start = rng.randrange(len(lines))
        n = min(len(lines) - start, rng.choice((1, 1, 1, 2, 3, 4)))
        prefix = "".join(lines[:start])
        middle = "".join(lines[start:start + n])
        suffix = "".join(lines[start + n:])
        return prefix, middle, suffix
    a = rng.randrange(len(chunk) + 1)
    b = min(len(chunk), a + rng.randint(1, 160))
    return chunk[:a], chunk[a:b], chunk[b:]


def make_example(chunk: str, rng: random.Random, template: FimTemplate, fim_rate: float, spm_rate: float) -> str:
    """One training string: FIM in PSM or SPM layout with probability ``fim_rate``, else plain, ending in eos."""
    if rng.random() < fim_rate and len(chunk) > 1:
        prefix, middle, suffix = fim_split(chunk, rng)
        prompt = template.spm(prefix, suffix) if rng.random() < spm_rate else template.psm(prefix, suffix)
        return f"{prompt}{middle}{template.eos}"
    return f"{chunk}{template.eos}"


class BlockStream:
    """Batches of an epoch's ``[n, seq_len]`` blocks (``epoch_blocks``, a pure function of the epoch)."""

    batch_size: int

    def epoch_blocks(self, epoch: int) -> torch.Tensor:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def batches(self, epoch: int, start_batch: int = 0) -> Any:
        """Yield (batch_index, [batch, seq_len] tensor) for ``epoch`` from ``start_batch`` on."""
        blocks = self.epoch_blocks(epoch)
        n_batches = len(blocks) // self.batch_size
        if n_batches == 0:
            raise ValueError(f"corpus too small for one batch of {self.batch_size} blocks")
        for b in range(start_batch, n_batches):
            yield b, blocks[b * self.batch_size:(b + 1) * self.batch_size]

    def fixed_blocks(self, max_blocks: int) -> torch.Tensor:
        """A fixed sample (epoch 0 of this seed) used for validation loss."""
        return self.epoch_blocks(0)[:max_blocks]


class PackedBlocks(BlockStream):
    """Per-epoch stream of [batch, seq_len] token blocks: shuffled chunks, FIM, tokenised, packed.

    An epoch is a pure function of (seed, epoch), so resuming needs only (epoch, batch index).
    """

    def __init__(self, texts: Sequence[str], tokenizer: Any, seq_len: int, batch_size: int, fim_rate: float,
                 spm_rate: float, seed: int, chars_per_chunk: int | None = None, family: str = "starcoder") -> None:
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.fim_rate = fim_rate
        self.spm_rate = spm_rate
        self.seed = seed
        self.template = template_for(family)
        # ~3 characters per token for code with an 8k BPE: a chunk then fits in about one block.
        cpc = chars_per_chunk or seq_len * 3
        self.chunks = [c for t in texts for c in chunk_text(t, cpc)]
        if not self.chunks:
            raise ValueError("no text to train on; the corpus split is empty")

    def epoch_blocks(self, epoch: int) -> torch.Tensor:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.chunks)))
        rng.shuffle(order)
        examples = [make_example(self.chunks[i], rng, self.template, self.fim_rate, self.spm_rate) for i in order]
        ids: list[int] = []
        for i in range(0, len(examples), 512):
            for seq in self.tokenizer(examples[i:i + 512], add_special_tokens=False)["input_ids"]:
                ids.extend(seq)
        n = len(ids) // self.seq_len
        if n == 0:
            raise ValueError(f"corpus too small for one block of {self.seq_len} tokens")
        return torch.tensor(ids[: n * self.seq_len], dtype=torch.long).view(n, self.seq_len)
