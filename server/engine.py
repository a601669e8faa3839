"""The serving engine: loads a causal LM, decodes off the event loop, reuses the KV cache across requests.

One engine serves one model. ``generate`` is thread-safe (a lock serialises decoding: on a 2-core
CPU two concurrent decodes are slower than two sequential ones) and checks its cancel event
between tokens, so a superseded request stops within one forward pass.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import distill_code
from distill_code.fim import FimTemplate, template_for
from distill_code.modeling import ModelLoadError, load_causal_lm
from indexing.foreground import FOREGROUND

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Mode = Literal["line", "block"]


def default_model_path() -> Path:
    """The starter student shipped inside the package."""
    return Path(distill_code.__file__).resolve().parent / "starter" / "student"


# Names for the shipped starter models, usable wherever a model directory is (``model`` option, --model).
STARTER_NAMES = ("starter:student", "starter:teacher")


def resolve_model(model: str | None) -> str:
    """The directory ``model`` names: ``starter:student``/``starter:teacher`` are the shipped starters,
    None the starter student, anything else is a directory (or a hub id, when online use is allowed)."""
    if not model:
        return str(default_model_path())
    if model in STARTER_NAMES:
        return str(default_model_path().parent / model.split(":", 1)[1])
    return model


@dataclass
class EngineOptions:
    model: str | None = None
    family: str = "auto"
    dtype: str = "float32"
    quantize: str = "none"
    allow_online: bool = False
    threads: int = 0
    decoder: str = "auto"  # "auto": the lean decoder when it supports the model; "transformers": always HF
    draft_tokens: int = 8  # prompt-lookup speculation: tokens verified per forward (0: one token per forward)


@dataclass
class MemoryHook:
    """Repository memory for one generation: ``query`` maps document-order token ids (``context_ids``,
    then what has been generated) to an ``indexing.memory.Match``, mixed in with ``weights``."""

    query: Callable[[list[int]], Any]
    context_ids: list[int]
    weights: Any  # distill_code.memory_mix.MixWeights
    draft_min_length: int = 4  # a sparse match at least this long drafts its continuation


@dataclass
class CopiedSpan:
    """Generated tokens ``start``..``start + tokens`` that the memory chose, copied from ``shard`` at ``pos``."""

    start: int
    tokens: int
    shard: Any
    pos: int


@dataclass
class GenerationResult:
    text: str
    tokens: int
    prompt_tokens: int
    reused_tokens: int
    elapsed_s: float
    stop_reason: str
    token_ids: list[int] = field(default_factory=list)
    memory_tokens: int = 0  # generated tokens the memory decided
    copied: list[CopiedSpan] = field(default_factory=list)
    # Per generated token: its probability under the distribution it was chosen from (the mixture when
    # the memory took part), and where it ends in ``text``; tokens before ``first_free`` were forced by
    # token healing. Benchmarks fit the memory mix's ``stop_below`` from these.
    token_probs: list[float] = field(default_factory=list)
    token_ends: list[int] = field(default_factory=list)
    first_free: int = 0
    # The mixed distribution's best tokens at the first free step (id, probability), best first.
    alternatives: list[tuple[int, float]] = field(default_factory=list)
    searched: int = 0  # other first tokens a line search decoded


@dataclass
class LineSearch:
    """Choose the first line among greedy continuations of the ``candidates`` most likely first tokens
    (the greedy one included) when the best of them is below ``below``: another first token wins when its
    line's log-probability beats the greedy line's by more than ``margin`` nats. Greedy decoding commits
    to the likeliest first token; when two are close, the line that follows is the better judge."""

    candidates: int = 3
    below: float = 0.9
    margin: float = 1.0

    def wanted(self, result: GenerationResult) -> bool:
        return (self.candidates > 1 and result.stop_reason != "cancelled" and len(result.alternatives) > 1
                and result.alternatives[0][1] < self.below)


def line_score(result: GenerationResult) -> float:
    """Log-probability of a generation's first line: its free tokens up to the one that ends the line."""
    end = result.text.find("\n")
    total = 0.0
    for i in range(result.first_free, len(result.token_probs)):
        total += math.log(max(result.token_probs[i], 1e-9))
        if end >= 0 and result.token_ends[i] > end:
            break
    return total


class Engine:
    """Owns the model, the tokenizer, the FIM template and a single reusable KV cache."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.model: Any = None
        self.tokenizer: Any = None
        self.template: FimTemplate | None = None
        self.model_path: str = ""
        self.state: str = "unloaded"
        self.error: str | None = None
        self._lock = threading.Lock()
        self._runner: Any = None  # FastDecoder or TransformersDecoder: one cached sequence
        self._kv_ids: list[int] = []
        self.decoder_name = ""
        self.spm_rate = 0.0  # share of suffix-prefix-middle examples in training, from the model's card.json
        self.trained_context: int | None = None  # sequence length it was trained on (card.json "seq_len")
        # Whether its training prompts had retrieved-context blocks: card.json "context_rate" > 0; a card
        # without it (the starter models) means no; None: no card, unknown (distilled students, other models).
        self.trained_with_context: bool | None = None
        self._n_params = 0
        self._stop_ids: set[int] = set()
        self.healer: Any = None
        self.stats = {"requests": 0, "generated_tokens": 0, "reused_tokens": 0, "prompt_tokens": 0,
                      "decode_s": 0.0}

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model; on failure ``state`` is "error" and ``error`` says what to do."""
        import torch  # deferred: importing torch takes seconds and `initialize` must not wait for it
        self.state = "loading"
        path = resolve_model(self.options.model)
        self.model_path = path
        try:
            if not self.options.model and not default_model_path().exists():
                raise ModelLoadError(
                    "no model configured and the shipped starter student is missing; "
                    "set the 'model' option (or --model DIR) to a Hugging Face model directory"
                )
            if self.options.threads > 0:
                torch.set_num_threads(self.options.threads)
            model, tok = load_causal_lm(path, dtype=self.options.dtype, allow_online=self.options.allow_online)
            if self.options.quantize == "int8" and self.options.dtype != "float32":
                log.warning("int8 dynamic quantization needs float32 weights; converting from %s",
                            self.options.dtype)
                model = model.float()
            self._n_params = sum(p.numel() for p in model.parameters())
            runner: Any = None
            from server.fastdecode import FastDecoder, TransformersDecoder, unsupported_reason
            if self.options.decoder == "auto":
                why = unsupported_reason(model)
                if why is None:
                    max_len = max(int(getattr(model.config, "max_position_embeddings", 0) or 0), 4096)
                    runner = FastDecoder(model, max_len=max_len)
                    self.decoder_name = "fast"
                else:
                    log.info("lean decoder declined (%s); decoding with transformers", why)
            if runner is None:
                runner = TransformersDecoder(model)
                self.decoder_name = "transformers"
            if self.options.quantize == "int8":
                runner = torch.ao.quantization.quantize_dynamic(runner, {torch.nn.Linear}, dtype=torch.qint8)
            # The HF module is kept only when it is what decodes: the lean decoder holds fused copies.
            model = runner.model if isinstance(runner, TransformersDecoder) else None
            vocab = set(tok.get_vocab())
            self.template = template_for(self.options.family, vocab)
            self._stop_ids = {
                i for s in self.template.stop_strings()
                if s in vocab and (i := tok.convert_tokens_to_ids(s)) is not None
            }
            if tok.eos_token_id is not None:
                self._stop_ids.add(int(tok.eos_token_id))
            card = _card(Path(path))
            self.spm_rate = _number(card.get("spm_rate"), 0.0)
            seq_len = int(_number(card.get("seq_len"), 0))
            self.trained_context = seq_len if seq_len > 0 else None
            self.trained_with_context = _number(card.get("context_rate"), 0.0) > 0 if card else None
            self.model, self.tokenizer, self._runner = model, tok, runner
            self._kv_ids = []
            self.state = "ready"
            self.error = None
            log.info("loaded %s (%s, quantize=%s, template=%s, decoder=%s)", path, self.options.dtype,
                     self.options.quantize, self.template.family, self.decoder_name)
            self.warm_up()
        except ModelLoadError as exc:
            self.state, self.error = "error", str(exc)
        except Exception as exc:  # a broken checkpoint must not take the server down
            self.state, self.error = "error", f"could not load model {path!r}: {exc}"

    def warm_up(self) -> float:
        """One short prefill and a few decode steps, so the first real request does not pay for the
        kernels' first runs (thread pools, allocations); the KV cache is left empty. Returns seconds."""
        import time

        t0 = time.perf_counter()
        stats = dict(self.stats)  # the warm-up is not a request
        try:
            ids = self.tokenizer("import os\n\n\ndef main(path):\n    return os.path.join(",
                                 add_special_tokens=False)["input_ids"]
            self._generate(ids, 4, "line")
        except Exception as exc:  # noqa: BLE001 - a warm-up failure only costs the first request time
            log.info("warm-up skipped: %s", exc)
        finally:
            if self._runner is not None:
                self._runner.reset()
            self._kv_ids = []
            self.stats = stats
        elapsed = time.perf_counter() - t0
        log.info("warmed up in %.0f ms", elapsed * 1000)
        return elapsed

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def parameters(self) -> int:
        return self._n_params if self._runner is not None else 0

    # -- decoding ------------------------------------------------------------------------
    def _prefill(self, prompt_ids: list[int]) -> tuple[torch.Tensor, int]:
        """Run the prompt through the model reusing the cached prefix; returns last logits, reused."""
        reuse = 0
        limit = min(len(self._kv_ids), len(prompt_ids) - 1)
        while reuse < limit and self._kv_ids[reuse] == prompt_ids[reuse]:
            reuse += 1
        if reuse == 0:
            self._runner.reset()
        else:
            self._runner.crop(reuse)
        self._kv_ids = []  # unknown until the forward succeeds
        logits = self._runner(prompt_ids[reuse:])
        self._kv_ids = list(prompt_ids)
        return logits, reuse

    def generate(self, prompt_ids: list[int], max_new_tokens: int, mode: Mode = "block",
                 cancel: threading.Event | None = None, heal_removed: str = "",
                 base_indent: int | None = None,
                 extra_stop: Callable[[str], bool] | None = None,
                 memory: MemoryHook | None = None, require_text: bool = False,
                 first_token: int | None = None, search: LineSearch | None = None) -> GenerationResult:
        """``_generate`` with background indexing stepped aside (completions and explanations alike); with
        ``search``, the first line is chosen among greedy continuations of the best first tokens."""
        with FOREGROUND.active():
            best = self._generate(prompt_ids, max_new_tokens, mode, cancel, heal_removed, base_indent, extra_stop,
                                  memory, require_text, first_token)
            if search is None or first_token is not None or not search.wanted(best):
                return best
            t0 = time.perf_counter()
            best_score, winner = line_score(best), None
            tried = 0
            for token, _p in best.alternatives[1: search.candidates]:
                if token in self._stop_ids:
                    continue
                if cancel is not None and cancel.is_set():
                    break
                # Only the first line is scored: decode it alone (line mode), reusing the prompt's cache.
                # Log-probabilities only fall as a line grows: stop a candidate once it can no longer win.
                alt = self._generate(prompt_ids, max_new_tokens, "line", cancel, heal_removed, base_indent,
                                     extra_stop, memory, require_text, token, count=False,
                                     abandon_at=best_score + search.margin)
                tried += 1
                if alt.stop_reason == "cancelled":
                    best.stop_reason = "cancelled"
                    break
                if alt.stop_reason == "abandoned" or not alt.text.split("\n", 1)[0].strip():  # no line: no suggestion
                    continue
                score = line_score(alt)
                if score > best_score + search.margin:
                    best_score, winner = score, (token, alt)
            self.stats["search_requests"] = self.stats.get("search_requests", 0) + 1
            self.stats["search_decodes"] = self.stats.get("search_decodes", 0) + tried
            if winner is not None and best.stop_reason != "cancelled":
                token, alt = winner
                if mode != "line":  # the suggestion may go on below its first line: decode it in full
                    alt = self._generate(prompt_ids, max_new_tokens, mode, cancel, heal_removed, base_indent,
                                         extra_stop, memory, require_text, token, count=False)
                alt.alternatives = best.alternatives
                alt.searched = tried
                alt.elapsed_s = best.elapsed_s + (time.perf_counter() - t0)
                self.stats["search_changed"] = self.stats.get("search_changed", 0) + 1
                return alt
            best.searched = tried
            best.elapsed_s += time.perf_counter() - t0
            return best

    def _generate(self, prompt_ids: list[int], max_new_tokens: int, mode: Mode = "block",
                  cancel: threading.Event | None = None, heal_removed: str = "",
                  base_indent: int | None = None,
                  extra_stop: Callable[[str], bool] | None = None,
                  memory: MemoryHook | None = None, require_text: bool = False,
                  first_token: int | None = None, count: bool = True,
                  abandon_at: float | None = None) -> GenerationResult:
        """Greedy decode after ``prompt_ids`` with early stops for ``mode``.

        ``heal_removed`` is text backed off the prompt by token healing: the first tokens are
        constrained to reproduce it, and it is stripped from the returned text. With ``memory``, each
        step decodes from the mixture of the model's and the repository memory's next-token
        distributions, and a long unambiguous match drafts its continuation for verification.
        ``first_token`` replaces the first free (unforced) token's choice; ``abandon_at`` stops decoding
        (reason "abandoned") once the free tokens' summed log-probability falls to it. ``count`` False
        leaves the request counters alone (a line search's extra decodes belong to one request).
        """
        import torch

        from distill_code.memory_mix import mix

        if not self.ready:
            raise ModelLoadError(self.error or "model is not loaded")
        if not prompt_ids:
            raise ValueError("empty prompt")
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            try:
                logits, reused = self._prefill(prompt_ids)
            except Exception:
                self._runner.reset()
                raise
            generated: list[int] = []
            remaining = heal_removed if (heal_removed and self.healer is not None) else ""
            reason = "length"
            text = ""
            drafter = _NgramDrafter(prompt_ids) if self.options.draft_tokens > 0 else None
            # Draft tokens already run through the model, each with the logits that follow it.
            verified: list[tuple[int, torch.Tensor]] = []
            self.stats.setdefault("drafted_tokens", 0)
            self.stats.setdefault("accepted_tokens", 0)
            self.stats.setdefault("memory_tokens", 0)
            copied: list[CopiedSpan] = []
            memory_tokens = 0
            token_probs: list[float] = []
            token_ends: list[int] = []
            first_free = -1
            alternatives: list[tuple[int, float]] = []
            line_logp = 0.0
            stop_below = float(getattr(memory.weights, "stop_below", 0.0)) if memory is not None else 0.0
            try:
                while len(generated) < max_new_tokens:
                    if cancel is not None and cancel.is_set():
                        reason = "cancelled"
                        break
                    match = memory.query(memory.context_ids + generated) if memory is not None else None
                    lam = 0.0
                    model_probs = None
                    if match is not None and match.length > 0 and memory is not None:
                        model_probs = torch.softmax(logits.float(), -1)
                        lam = memory.weights.weight(match.length, match.sparse, float(model_probs.max()))
                        if lam > 0.0:
                            logits = torch.log(mix(model_probs, match.next_counts, lam))
                    if remaining:
                        # Token healing: only tokens consistent with the backed-off text (ids past the
                        # model's output size are filtered by mask_logits).
                        masked = self.healer.mask_logits(logits, remaining)
                        if bool(torch.isinf(masked).all()):
                            remaining = ""  # nothing in the vocabulary fits: decode freely
                            next_id = int(torch.argmax(logits))
                        else:
                            next_id = int(torch.argmax(masked))
                            remaining = self.healer.advance(remaining, next_id)
                    else:
                        next_id = int(torch.argmax(logits))
                        if first_free < 0:
                            first_free = len(generated)
                            top = torch.topk(torch.softmax(logits.float(), -1), 5)
                            alternatives = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
                            if first_token is not None:
                                next_id = first_token
                    if next_id in self._stop_ids and require_text and not self._body(text, heal_removed).strip():
                        # On a blank line the user asked for a line: the model's "nothing here" (a FIM
                        # middle that ends at once) is no suggestion, so take its best real token.
                        free = logits.clone()
                        free[[i for i in self._stop_ids if i < free.shape[-1]]] = float("-inf")
                        if remaining:
                            free = self.healer.mask_logits(free, remaining)
                        if not bool(torch.isinf(free).all()):
                            next_id = int(torch.argmax(free))
                    if next_id in self._stop_ids:
                        reason = "eos"
                        break
                    # The chosen token's probability, from what this step already computed where it can
                    # (mixed logits are log-probabilities; unmixed ones have model_probs when matched).
                    if lam > 0.0:
                        p_chosen = float(torch.exp(logits[next_id]))
                    elif model_probs is not None:
                        p_chosen = float(model_probs[next_id])
                    else:
                        p_chosen = float(torch.softmax(logits.float(), -1)[next_id])
                    if stop_below > 0.0 and first_free >= 0 and len(generated) > first_free and p_chosen < stop_below:
                        reason = "unsure"  # the rest would more likely be wrong than right
                        break
                    token_probs.append(p_chosen)
                    if abandon_at is not None and first_free >= 0:
                        line_logp += math.log(max(p_chosen, 1e-9))
                        if line_logp <= abandon_at:
                            reason = "abandoned"  # a line search's candidate that can no longer win
                            break
                    from_memory = None
                    if lam > 0.0 and match is not None and model_probs is not None and next_id in match.next_counts:
                        p_mem = match.next_counts[next_id] / max(1, sum(match.next_counts.values()))
                        p_model = float(model_probs[next_id])
                        if lam * p_mem >= (1.0 - lam) * p_model:
                            memory_tokens += 1
                            from_memory = next((w for w in match.where if int(w[0].tokens[w[1]]) == next_id), None)
                            _extend_copied(copied, len(generated), from_memory)
                    generated.append(next_id)
                    # The healer's decode keeps a SentencePiece first-token space that tokenizer.decode drops.
                    text = (self.healer.decode(generated) if self.healer is not None
                            else self.tokenizer.decode(generated, skip_special_tokens=False))
                    token_ends.append(max(0, len(text) - len(heal_removed)))
                    if not remaining and (self._should_stop(text, heal_removed, mode, base_indent)
                                          or (extra_stop is not None and extra_stop(text))):
                        reason = "stop"
                        break
                    if len(generated) >= max_new_tokens:
                        break
                    if drafter is not None:
                        drafter.append(next_id)
                    if verified and verified[0][0] == next_id:
                        # The model already saw this token as a draft: its K/V are cached.
                        _, logits = verified.pop(0)
                        self._kv_ids.append(next_id)
                        self.stats["accepted_tokens"] += 1
                        continue
                    if verified:  # a draft was rejected: drop its K/V (and everything after it)
                        verified = []
                        self._runner.crop(len(self._kv_ids))
                    draft: list[int] = []
                    if (from_memory is not None and memory is not None and match is not None and match.sparse
                            and match.length >= memory.draft_min_length and not remaining
                            and self.options.draft_tokens > 0):
                        # A copied span is usually right for longer than a prompt-lookup guess: draft twice as far.
                        draft = from_memory[0].continuation(from_memory[1] + 1, 2 * self.options.draft_tokens)
                    if not draft:
                        draft = [] if drafter is None or remaining else drafter.propose(self.options.draft_tokens)
                    if draft:
                        rows = self._runner([next_id, *draft], all_logits=True)
                        logits = rows[0]
                        verified = list(zip(draft, rows[1:], strict=True))
                        self.stats["drafted_tokens"] += len(draft)
                    else:
                        logits = self._runner([next_id])
                    self._kv_ids.append(next_id)
            except Exception:
                self._runner.reset()  # the cache no longer matches _kv_ids
                self._kv_ids = []
                raise
            if verified:
                self._runner.crop(len(self._kv_ids))
            if heal_removed and self.healer is not None:
                text = self.healer.strip(text, heal_removed)
            elapsed = time.perf_counter() - t0
            if count:  # a line search's extra decodes are part of its request
                self.stats["requests"] += 1
                self.stats["reused_tokens"] += reused
                self.stats["prompt_tokens"] += len(prompt_ids)
            self.stats["generated_tokens"] += len(generated)
            self.stats["decode_s"] += elapsed
            self.stats["memory_tokens"] += memory_tokens
            return GenerationResult(text=text, tokens=len(generated), prompt_tokens=len(prompt_ids),
                                    reused_tokens=reused, elapsed_s=elapsed, stop_reason=reason,
                                    token_ids=generated, memory_tokens=memory_tokens, copied=copied,
                                    token_probs=token_probs, token_ends=token_ends,
                                    first_free=first_free if first_free >= 0 else len(generated),
                                    alternatives=alternatives)

    @staticmethod
    def _body(text: str, heal_removed: str) -> str:
        """The generated text without the typed characters that token healing made it reproduce."""
        return text[len(heal_removed):] if heal_removed and text.startswith(heal_removed) else text

    @staticmethod
    def _should_stop(text: str, heal_removed: str, mode: Mode, base_indent: int | None) -> bool:
        body = Engine._body(text, heal_removed)
        if mode == "line":
            return "\n" in body.lstrip("\n") or (body.startswith("\n") and body.strip() != "")
        # Block mode: stop once a complete line dedents below the block, or after a blank-line pair.
        lines = body.split("\n")
        if len(lines) < 3:
            return False
        if "\n\n\n" in body:
            return True
        if base_indent is None:
            return False
        for ln in lines[1:-1]:
            if ln.strip() and (len(ln) - len(ln.lstrip())) < base_indent:
                return True
        return False

    def prompt_budget(self, requested: int) -> int:
        """The prompt budget to use: ``requested``, capped at the length the model was trained on (when its
        card records it): positions past that are out of distribution for its rotary embeddings, and cost
        prefill time on every cold request."""
        if self.trained_context and self.trained_context < requested:
            return self.trained_context
        return requested


def _extend_copied(copied: list[CopiedSpan], index: int, where: tuple[Any, int] | None) -> None:
    """Record generated token ``index`` as copied from ``where``; consecutive tokens from consecutive
    positions of one shard make one span."""
    if where is None:
        return
    shard, pos = where
    last = copied[-1] if copied else None
    if last is not None and last.shard is shard and last.start + last.tokens == index and last.pos + last.tokens == pos:
        last.tokens += 1
    else:
        copied.append(CopiedSpan(index, 1, shard, pos))


def _card(model_dir: Path) -> dict[str, Any]:
    """A Protege model card (card.json beside the weights), or {} when there is none or it is unreadable."""
    import json

    try:
        card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def _number(value: Any, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


class _NgramDrafter:
    """Prompt-lookup drafts: after the sequence's last n tokens (n = 3, then 2), propose what followed
    their most recent earlier occurrence. Code repeats its identifiers and idioms, so these drafts
    are often right, and on a memory-bound CPU verifying eight tokens costs little more than one."""

    def __init__(self, seq: list[int], orders: tuple[int, ...] = (3, 2)) -> None:
        self.seq = list(seq)
        self.orders = orders
        self.maps: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in orders}
        self.indexed = 0

    def append(self, token: int) -> None:
        self.seq.append(token)

    def propose(self, k: int) -> list[int]:
        seq, end = self.seq, len(self.seq)
        # Index every n-gram whose continuation is known (it ends before the last token).
        for j in range(self.indexed, end):
            for n, table in self.maps.items():
                if j >= n:
                    table[tuple(seq[j - n: j])] = j
        self.indexed = end
        for n in self.orders:
            if end >= n:
                at = self.maps[n].get(tuple(seq[end - n:]))
                if at is not None:
                    # A match that runs into the present is a repeating pattern: continue its period.
                    period = end - at
                    return [seq[at + i % period] for i in range(k)] if at + k > end else seq[at: at + k]
        return []
