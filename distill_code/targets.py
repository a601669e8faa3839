"""Teacher targets: compact top-k log-probabilities with a tail bucket, cached by content; data distillation.

Soft targets are the teacher's top-k log-probabilities (at T = 1) of every completion token
plus the log of the remaining mass, stored as uint16/int32 ids + float16 values in SQLite,
keyed by (teacher revision, tokenizer, k, hash of the encoded example): re-running after an
edit recomputes only the examples whose encoding changed. A teacher is an in-process
Hugging Face causal LM, a weighted ensemble of them, or an OpenAI-compatible server (vLLM)
that returns prompt logprobs. Teacher generations become extra training data only when
they parse and pass the security screen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from distill_code.encoding import Budget, Encoded, collate, encode_prompt
from distill_code.fim import FimTemplate
from distill_code.losses import SparseTargets, tail_logmass
from distill_code.mining import Example
from distill_code.vocab import VocabAlignment

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------- fingerprints


def model_revision(path: str | Path) -> str:
    """A revision id for a local model directory: config plus size and sampled bytes of every weight file."""
    p = Path(path)
    h = hashlib.sha256()
    cfg = p / "config.json"
    if cfg.exists():
        h.update(cfg.read_bytes())
    for f in sorted(list(p.glob("*.safetensors")) + list(p.glob("*.bin"))):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:  # head and tail change with any retraining; hashing GBs would not pay
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the store


class TargetStore:
    """SQLite store of sparse targets; one row per (teacher, tokenizer, k, encoded example)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        self.db.execute("CREATE TABLE IF NOT EXISTS targets (key TEXT PRIMARY KEY, n INTEGER, k INTEGER, "
                        "id_bytes INTEGER, ids BLOB, logprobs BLOB, tail BLOB)")

    @staticmethod
    def key(teacher_rev: str, tok_fp: str, k: int, enc: Encoded) -> str:
        return hashlib.sha256(f"{teacher_rev}|{tok_fp}|{k}|{enc.content_hash()}".encode()).hexdigest()[:32]

    def has(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM targets WHERE key=?", (key,)).fetchone() is not None

    def put(self, key: str, ids: np.ndarray, logprobs: np.ndarray, tail: np.ndarray) -> int:
        """Store one example's targets; returns the bytes written for its payload."""
        id_bytes = 2 if int(ids.max(initial=0)) < 65536 else 4
        ids_b = ids.astype(np.uint16 if id_bytes == 2 else np.int32).tobytes()
        lp_b = logprobs.astype(np.float16).tobytes()
        # float16 cannot hold -inf-free tiny tails well; clamp to its range so nothing becomes nan.
        tail_b = np.clip(tail, -60000.0, 0.0).astype(np.float16).tobytes()
        self.db.execute("INSERT OR REPLACE INTO targets VALUES (?,?,?,?,?,?,?)",
                        (key, ids.shape[0], ids.shape[1], id_bytes, ids_b, lp_b, tail_b))
        return len(ids_b) + len(lp_b) + len(tail_b)

    def get(self, key: str) -> SparseTargets | None:
        row = self.db.execute("SELECT n, k, id_bytes, ids, logprobs, tail FROM targets WHERE key=?",
                              (key,)).fetchone()
        if row is None:
            return None
        n, k, id_bytes, ids_b, lp_b, tail_b = row
        ids = np.frombuffer(ids_b, dtype=np.uint16 if id_bytes == 2 else np.int32).astype(np.int64).reshape(n, k)
        lps = np.frombuffer(lp_b, dtype=np.float16).astype(np.float32).reshape(n, k)
        tail = np.frombuffer(tail_b, dtype=np.float16).astype(np.float32)
        return SparseTargets(torch.from_numpy(ids), torch.from_numpy(lps), torch.from_numpy(tail.copy()))

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.commit()
        self.db.close()


# ------------------------------------------------------------------------------ teachers


@dataclass
class LocalTeacher:
    """One or more in-process causal LMs; with several, a weighted mixture of their distributions."""

    models: list[Any]
    weights: list[float]
    alignment: VocabAlignment
    revision: str
    device: str = "cpu"

    def completion_logprobs(self, batch: list[Encoded], pad_id: int) -> list[torch.Tensor]:
        """Full log-distributions ``(n_completion, V_student)`` per example, at T = 1."""
        b = collate(batch, pad_id)
        mixed: torch.Tensor | None = None
        total = sum(self.weights)
        with torch.no_grad():
            for model, w in zip(self.models, self.weights, strict=True):
                logits = model(input_ids=b["input_ids"].to(self.device),
                               attention_mask=b["attention_mask"].to(self.device)).logits.float().cpu()
                lp = F.log_softmax(self.alignment.teacher_logits(logits), dim=-1) + math.log(w / total)
                mixed = lp if mixed is None else torch.logaddexp(mixed, lp)
        assert mixed is not None
        return [mixed[i][b["mask"][i]] for i in range(len(batch))]


@dataclass
class RemoteTeacher:
    """An OpenAI-compatible completions server that echoes prompt logprobs (e.g. vLLM)."""

    base_url: str
    model: str
    tokenizer: Any
    revision: str
    timeout_s: float = 120.0
    _ids_by_token: dict[str, int] = field(default_factory=dict)

    def score(self, enc: Encoded, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k ids, log-probs and tail of each completion token of ``enc``."""
        body = {"model": self.model, "prompt": enc.ids, "max_tokens": 1, "echo": True, "logprobs": k,
                "temperature": 0.0, "return_tokens_as_token_ids": True}
        req = urllib.request.Request(self.base_url.rstrip("/") + "/v1/completions",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                payload = json.loads(resp.read())
        except OSError as exc:
            raise RuntimeError(f"teacher server {self.base_url} did not answer ({exc}); is it running?") from exc
        tops = payload["choices"][0]["logprobs"]["top_logprobs"]
        rows = tops[enc.start: len(enc.ids)]
        if len(rows) != enc.n_completion or any(r is None for r in rows):
            raise RuntimeError(f"teacher server {self.base_url} returned no prompt logprobs; start vLLM with "
                               "prompt logprobs enabled")
        ids = np.zeros((len(rows), k), dtype=np.int64)
        lps = np.full((len(rows), k), -1e4, dtype=np.float32)
        for i, row in enumerate(rows):
            items = sorted(row.items(), key=lambda kv: -kv[1])[:k]
            for j, (tok, lp) in enumerate(items):
                ids[i, j] = self._token_id(tok)
                lps[i, j] = lp
        tail = tail_logmass(torch.from_numpy(lps)).numpy()
        return ids, lps, tail

    def _token_id(self, tok: str) -> int:
        if tok.startswith("token_id:"):
            return int(tok.split(":", 1)[1])
        if tok not in self._ids_by_token:
            self._ids_by_token[tok] = int(self.tokenizer.convert_tokens_to_ids(tok))
        return self._ids_by_token[tok]


# ------------------------------------------------------------------------- computing targets


@dataclass
class TargetStats:
    computed: int = 0
    cached: int = 0
    tokens: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0

    @property
    def bytes_per_token(self) -> float:
        return self.payload_bytes / self.tokens if self.tokens else 0.0


def compute_targets(encoded: Sequence[Encoded], teacher: LocalTeacher | RemoteTeacher, tokenizer: Any,
                    store: TargetStore, k: int = 16, batch_size: int = 8, pad_id: int | None = None,
                    progress: bool = True) -> tuple[list[str], TargetStats]:
    """Ensure sparse targets for every encoded example exist in ``store``; returns their keys in order."""
    t0 = time.perf_counter()
    tok_fp = tokenizer_fingerprint(tokenizer)
    keys = [TargetStore.key(teacher.revision, tok_fp, k, e) for e in encoded]
    todo = [i for i, key in enumerate(keys) if not store.has(key)]
    stats = TargetStats(cached=len(keys) - len(todo))
    pad = pad_id if pad_id is not None else int(tokenizer.pad_token_id or 0)
    # Longest first: batches of similar length waste less padding.
    todo.sort(key=lambda i: -len(encoded[i].ids))
    bar = tqdm(total=len(todo), desc="teacher targets", disable=not progress or not todo, leave=False)
    for lo in range(0, len(todo), batch_size):
        chunk = todo[lo: lo + batch_size]
        if isinstance(teacher, LocalTeacher):
            dists = teacher.completion_logprobs([encoded[i] for i in chunk], pad)
            for i, lp in zip(chunk, dists, strict=True):
                vals, ids = lp.topk(min(k, lp.shape[-1]), dim=-1)
                tail = tail_logmass(vals)
                stats.payload_bytes += store.put(keys[i], ids.numpy(), vals.numpy(), tail.numpy())
                stats.tokens += ids.shape[0]
        else:
            for i in chunk:
                ids_np, lps_np, tail_np = teacher.score(encoded[i], k)
                stats.payload_bytes += store.put(keys[i], ids_np, lps_np, tail_np)
                stats.tokens += ids_np.shape[0]
        stats.computed += len(chunk)
        store.commit()  # a crash loses at most one batch
        bar.update(len(chunk))
    bar.close()
    stats.seconds = time.perf_counter() - t0
    if stats.tokens:
        log.info("teacher targets: %d computed, %d cached, %.1f bytes/token", stats.computed, stats.cached,
                 stats.bytes_per_token)
    return keys, stats


# ------------------------------------------------------------------------ data distillation


def _error_nodes(text: str, language: str) -> int:
    from tree_sitter_language_pack import get_parser

    root = get_parser(language).parse(text.encode("utf-8")).root_node  # type: ignore[arg-type]
    count, stack = 0, [root]
    while stack:
        n = stack.pop()
        if n.is_error or n.is_missing:
            count += 1
        if n.has_error:
            stack.extend(n.children)
    return count


def screen_generation(ex: Example, generation: str) -> tuple[bool, str]:
    """Keep a teacher generation only if it parses as well as the original and passes the security screen."""
    if not generation.strip():
        return False, "empty"
    original = _error_nodes(ex.prefix + ex.middle + ex.suffix, ex.language)
    if _error_nodes(ex.prefix + generation + ex.suffix, ex.language) > original:
        return False, "parse"
    try:
        from security.screen import screen_suggestion
    except ImportError:
        log.warning("security.screen is not available; teacher generations are only parse-checked")
        return True, "unscreened"
    line = ex.prefix.count("\n")
    character = len(ex.prefix) - (ex.prefix.rfind("\n") + 1)
    verdict = screen_suggestion(ex.prefix + ex.suffix, line, character, generation, ex.language).verdict
    # "annotate" and "unscreened" are not proof of safety: training data must be clean.
    return (verdict == "allow"), ("ok" if verdict == "allow" else f"screen:{verdict}")


def generate_data(examples: Sequence[Example], model: Any, tokenizer: Any, template: FimTemplate,
                  budget: Budget | None = None, max_new_tokens: int = 48,
                  progress: bool = True) -> tuple[list[Example], dict[str, int]]:
    """Greedy teacher completions of ``examples`` as new examples (kind ``teacher``), filtered.

    Returns the accepted examples and a count of outcomes (``ok``, ``parse``, ``screen:block``, ...).
    """
    budget = budget or Budget()
    eos = tokenizer.convert_tokens_to_ids(template.eos)
    stops = template.stop_strings()
    outcomes: dict[str, int] = {}
    kept: list[Example] = []
    for ex in tqdm(examples, desc="teacher generations", disable=not progress, leave=False):
        prompt = encode_prompt(ex, tokenizer, template, budget, reserve=max_new_tokens)
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=False)
        for s in stops:
            text = text.split(s, 1)[0]
        ok, why = screen_generation(ex, text)
        outcomes[why] = outcomes.get(why, 0) + 1
        if ok:
            kept.append(replace(ex, id=ex.id + "-t", kind="teacher", middle=text))
    return kept, outcomes
