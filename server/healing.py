"""Token healing for completions that start mid-word: back off split tokens, constrain, strip.

A prompt that ends inside a token ("self.resu") shows the model a token split it never saw in
training. Healing removes the last token(s) the typed text may have split (``plan_prefix``),
constrains the first generated tokens to those consistent with the removed characters
(``allowed_tokens`` / ``advance``), and strips the typed characters from the completion
(``strip``). ``plan_suffix`` does the same at the suffix when the cursor sits inside a word.

All matching is done on the bytes each token contributes to decoded text, so byte-level BPE
tokens holding part of a UTF-8 character work too. A ``remaining`` string that ends inside such
a character carries the leftover bytes as surrogate escapes (``"\\udcNN"``); pass it back as is.
The vocabulary index (a sorted array of token byte strings: a flattened prefix trie, where every
subtree is a contiguous range found by binary search) is built once per tokenizer and shared.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

# Characters of the prefix tokenized to find the split token(s): enough for several tokens, small
# enough to cost a fraction of a millisecond whatever the document size.
WINDOW_CHARS = 192
# A moved-out suffix word longer than this is not a word remainder but a blob (minified code, data).
MAX_SUFFIX_WORD = 64
_WORD = re.compile(r"\w+")
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _dec(data: bytes) -> str:
    # Partial UTF-8 sequences survive as lone surrogates and re-encode to the same bytes.
    return data.decode("utf-8", "surrogateescape")


def _byte_level_alphabet() -> dict[str, int]:
    """The GPT-2 byte-to-printable-character table, inverted (character -> byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[str, int] = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def _decoder_types(tokenizer: Any) -> set[str]:
    """Types named anywhere in the fast tokenizer's decoder (a Sequence nests others)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None) if backend is not None else None
    if decoder is None:
        return set()
    try:
        spec = json.loads(decoder.__getstate__())
    except Exception:  # an exotic decoder without JSON state: fall back to decoding in context
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                found.add(node["type"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found


def _special_ids(tokenizer: Any) -> set[int]:
    ids = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    for i, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(i))
    return ids


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Bytes each token id adds to decoded text mid-sequence; None for special or empty tokens."""
    n = len(tokenizer)
    special = _special_ids(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    added = {int(i): t.content for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()}
    out: list[bytes | None] = [None] * n
    byte_decoder = getattr(tokenizer, "byte_decoder", None)  # slow GPT-2 style tokenizers
    decoder_types = _decoder_types(tokenizer)
    if byte_decoder is None and "ByteLevel" in decoder_types:
        byte_decoder = _byte_level_alphabet()
    if byte_decoder is not None:
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                continue
            if i in added:
                out[i] = added[i].encode("utf-8") or None
                continue
            try:
                out[i] = bytes(byte_decoder[c] for c in piece) or None
            except KeyError:  # a piece outside the byte alphabet was added as plain text
                out[i] = piece.encode("utf-8") or None
        return out
    # SentencePiece/Unigram/WordPiece: a token's text depends on its neighbours (a leading "▁"
    # is a space mid-sequence but dropped at the start), so decode each after a plain anchor.
    # "<0x0A>" pieces stand for one byte when the decoder turns them back into bytes (Llama-style).
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_fallback = ("ByteFallback" in decoder_types
                     or bool(getattr(getattr(backend, "model", None), "byte_fallback", False)))
    anchor = next((i for i, p in enumerate(pieces) if i not in special and p == "a"), None)
    if anchor is None:
        anchor = next(i for i, p in enumerate(pieces) if i not in special and p and p.isalnum())
    base = tokenizer.decode([anchor], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    texts = tokenizer.batch_decode([[anchor, i] for i in range(n)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    for i, (piece, text) in enumerate(zip(pieces, texts, strict=True)):
        if i in special or piece is None:
            continue
        m = _BYTE_FALLBACK.match(piece) if byte_fallback else None
        if m:
            out[i] = bytes([int(m.group(1), 16)])
        elif text.startswith(base):
            out[i] = text[len(base):].encode("utf-8") or None
        else:
            out[i] = tokenizer.decode([i], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False).encode("utf-8") or None
    return out


class VocabIndex:
    """Token byte strings sorted so that all tokens with a given prefix form one contiguous range."""

    def __init__(self, tokenizer: Any) -> None:
        self.token_bytes = token_bytes(tokenizer)
        self.vocab_size = len(self.token_bytes)
        entries = sorted((b, i) for i, b in enumerate(self.token_bytes) if b)
        self.keys: list[bytes] = [b for b, _ in entries]
        self.sorted_ids = torch.tensor([i for _, i in entries], dtype=torch.long)
        self.by_bytes: dict[bytes, list[int]] = {}
        for b, i in entries:
            self.by_bytes.setdefault(b, []).append(i)
        self.max_len = max((len(b) for b in self.keys), default=0)

    def prefix_range(self, prefix: bytes) -> tuple[int, int]:
        """[lo, hi) of the tokens that start with ``prefix`` in sorted order."""
        lo = bisect.bisect_left(self.keys, prefix)
        stem = prefix.rstrip(b"\xff")
        if not stem:
            return lo, len(self.keys)
        upper = stem[:-1] + bytes([stem[-1] + 1])
        return lo, bisect.bisect_left(self.keys, upper, lo)

    def has_proper_extension(self, prefix: bytes) -> bool:
        """True when some token's bytes start with ``prefix`` and are longer than it."""
        lo, hi = self.prefix_range(prefix)
        return hi - lo > len(self.by_bytes.get(prefix, ()))

    def consistent_ids(self, remaining: bytes) -> torch.Tensor:
        """Ids whose bytes are a non-empty prefix of ``remaining`` or start with it (sorted)."""
        lo, hi = self.prefix_range(remaining)
        parts = [self.sorted_ids[lo:hi]]
        shorter = [i for k in range(1, len(remaining)) for i in self.by_bytes.get(remaining[:k], ())]
        if shorter:
            parts.append(torch.tensor(shorter, dtype=torch.long))
        return torch.sort(torch.cat(parts)).values


_INDEXES: dict[tuple[Any, ...], VocabIndex] = {}
_INDEX_LOCK = threading.Lock()


def _tokenizer_key(tokenizer: Any) -> tuple[Any, ...]:
    n = len(tokenizer)
    # Name and size alone collide for tokenizers trained in memory; a strided sample of pieces does not.
    sample = tuple(tokenizer.convert_ids_to_tokens(list(range(0, n, max(1, n // 64)))))
    return type(tokenizer).__name__, str(getattr(tokenizer, "name_or_path", "")), n, sample


def vocab_index(tokenizer: Any) -> VocabIndex:
    """The shared index for ``tokenizer``, built on first use."""
    key = _tokenizer_key(tokenizer)
    with _INDEX_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = _INDEXES[key] = VocabIndex(tokenizer)
            log.debug("built token-healing index for %s (%d tokens)", key[1] or key[0], key[2])
        return index


@dataclass(frozen=True)
class HealPlan:
    """A prefix cut back to a token boundary; generation must reproduce ``removed`` first."""

    prefix: str
    removed: str
    backed_off: int = 0  # prompt tokens removed from the end of the prefix


@dataclass(frozen=True)
class SuffixPlan:
    """A suffix with the word remainder after the cursor moved out of it.

    The model then sees the suffix start on a word boundary; when the completion re-creates the
    remainder, ``trim`` cuts it (and anything after it), since the document already holds it.
    """

    suffix: str
    removed: str

    def _cut(self, generated: str) -> int | None:
        if not self.removed:
            return None
        word_end = bool(_WORD.fullmatch(self.removed[-1]))
        start = generated.find(self.removed)
        while start >= 0:
            after = generated[start + len(self.removed):start + len(self.removed) + 1]
            # The remainder must end where it ended in the document: not glued to more word characters.
            if not (word_end and after and _WORD.fullmatch(after)):
                return start
            start = generated.find(self.removed, start + 1)
        return None

    def reached(self, generated: str) -> bool:
        """True once ``generated`` has re-created the remainder and moved past it (stop decoding)."""
        cut = self._cut(generated)
        return cut is not None and len(generated) > cut + len(self.removed)

    def trim(self, generated: str) -> str:
        """``generated`` up to where it re-creates the moved-out remainder (unchanged if it never does)."""
        cut = self._cut(generated)
        return generated if cut is None else generated[:cut]


class TokenHealer:
    """Token healing for one tokenizer; cheap to construct (the vocabulary index is shared)."""

    def __init__(self, tokenizer: Any, max_tokens: int = 3, heal_whitespace: bool = True,
                 cache_size: int = 1024) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        # Whitespace ends ("return ", "\n    ") are split tokens too for BPE (" x" is one token),
        # so they heal by default; False keeps such prefixes as they are.
        self.heal_whitespace = heal_whitespace
        self.index = vocab_index(tokenizer)
        self._allowed: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._allowed_lock = threading.Lock()  # the engine may decode on several threads
        self._cache_size = cache_size

    # -- planning ------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        # The Rust tokenizer directly: same ids, without the Python wrapper's ~0.5 ms per call.
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return list(backend.encode(text, add_special_tokens=False).ids)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def plan_prefix(self, prefix: str) -> HealPlan:
        """Cut the prefix back over the last token(s) the typed text may have split.

        Tokens are backed off (at most ``max_tokens``) while the text they hold could still be the
        start of a longer vocabulary token; the cut prefix always tokenizes to the original
        prefix's tokens up to the cut, so the prompt keeps its cached tokens.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        keep = HealPlan(prefix, "")
        if not prefix or (not self.heal_whitespace and prefix[-1].isspace()):
            return keep
        start = max(0, len(prefix) - WINDOW_CHARS)
        window = prefix[start:]
        ids = self._encode(window)
        data = _enc(window)
        # The first window token may be a fragment of a longer one (the cut fell inside it).
        floor = 0 if start == 0 else 1
        removed = b""
        k = len(ids)
        while k > floor and len(ids) - k < self.max_tokens:
            piece = self.index.token_bytes[ids[k - 1]] if ids[k - 1] < self.index.vocab_size else None
            if not piece:
                break
            candidate = piece + removed
            if not data.endswith(candidate) or not self.index.has_proper_extension(candidate):
                break
            removed, k = candidate, k - 1
        # BPE is not always prefix-stable: accept the cut only if the kept text re-tokenizes the same.
        while removed:
            head = data[: len(data) - len(removed)]
            try:
                head_text = head.decode("utf-8")
            except UnicodeDecodeError:
                head_text = None
            if head_text is not None and self._encode(head_text) == ids[:k]:
                return HealPlan(prefix[:start] + head_text, _dec(removed), len(ids) - k)
            piece = self.index.token_bytes[ids[k - 1]] if k > floor else None
            if not piece or len(ids) - k >= self.max_tokens or not data.endswith(piece + removed):
                break
            removed, k = piece + removed, k - 1
        return keep

    def plan_suffix(self, suffix: str, prefix: str | None = None) -> SuffixPlan:
        """Move the word remainder after the cursor out of the suffix.

        With ``prefix`` given, only when the cursor really sits inside a word or splits a token
        (``"x =|= y"``); without it, whenever the suffix starts with word characters.
        """
        if not isinstance(suffix, str):
            raise TypeError(f"suffix must be a str, got {type(suffix).__name__}")
        first_line = suffix.split("\n", 1)[0]
        word = _WORD.match(first_line)
        size = 0
        if word and (prefix is None or (prefix and _WORD.fullmatch(prefix[-1]))):
            size = word.end()
        if prefix and not prefix[-1].isspace():
            # After a space the word after the cursor starts a fresh word; only a real split counts.
            size = max(size, self._token_overhang(prefix, first_line))
        if size == 0 or size > MAX_SUFFIX_WORD:
            return SuffixPlan(suffix, "")
        return SuffixPlan(suffix[size:], suffix[:size])

    def _token_overhang(self, prefix: str, line: str) -> int:
        """Characters of ``line`` covered by a token that starts in ``prefix`` (0 at a token boundary)."""
        if not line:
            return 0
        tail = prefix[-32:]
        head = line[:MAX_SUFFIX_WORD]
        enc = self.tokenizer(tail + head, add_special_tokens=False, return_offsets_mapping=True)
        cut = len(tail)
        overhang = 0
        for s, e in enc["offset_mapping"]:
            if s < cut < e:
                overhang = max(overhang, e - cut)
        return overhang

    # -- constrained decoding ------------------------------------------------------------
    def allowed_tokens(self, remaining: str) -> torch.Tensor:
        """Ids of non-special tokens whose text t is non-empty and a prefix of ``remaining`` or starts with it."""
        key = _enc(remaining)
        with self._allowed_lock:
            hit = self._allowed.get(key)
            if hit is not None:
                self._allowed.move_to_end(key)
                return hit
        ids = self.index.consistent_ids(key) if key else torch.empty(0, dtype=torch.long)
        with self._allowed_lock:
            self._allowed[key] = ids
            if len(self._allowed) > self._cache_size:
                self._allowed.popitem(last=False)
        return ids

    def mask_logits(self, logits: torch.Tensor, remaining: str) -> torch.Tensor:
        """``logits`` (last dim = vocabulary) with every token inconsistent with ``remaining`` at -inf."""
        if not remaining:
            return logits
        masked = torch.full_like(logits, float("-inf"))
        ids = self.allowed_tokens(remaining)
        ids = ids[ids < logits.shape[-1]]
        masked[..., ids] = logits[..., ids]
        return masked

    def advance(self, remaining: str, token_id: int) -> str:
        """What is left of ``remaining`` after emitting ``token_id`` ("" once consumed)."""
        data = _enc(remaining)
        piece = self.index.token_bytes[token_id] if 0 <= token_id < self.index.vocab_size else None
        if piece and data.startswith(piece):
            return _dec(data[len(piece):])
        if piece and piece.startswith(data):
            return ""
        raise ValueError(f"token {token_id} is not consistent with the text still to reproduce {remaining!r}; "
                         "choose it from allowed_tokens(remaining)")

    def decode(self, ids: list[int]) -> str:
        """Text of generated ``ids`` as it follows the prompt (special tokens dropped).

        Unlike ``tokenizer.decode`` on the generated ids alone, a SentencePiece "▁x" keeps its space
        here, so the text lines up with ``removed``; a trailing partial character shows as U+FFFD.
        """
        pieces = self.index.token_bytes
        data = b"".join(pieces[i] or b"" for i in ids if 0 <= i < self.index.vocab_size)
        return data.decode("utf-8", "replace")

    def strip(self, generated: str, removed: str) -> str:
        """The completion without the typed characters that healing made the model reproduce."""
        if generated.startswith(removed):
            return generated[len(removed):]
        if removed.startswith(generated):
            return ""  # stopped before reproducing all the typed characters: nothing new to show
        log.debug("completion %r does not reproduce the typed text %r; dropping it", generated[:40], removed)
        return ""
