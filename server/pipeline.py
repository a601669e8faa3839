"""The completion pipeline: position → context → prompt → engine → post-processing → screen → cache.

Synchronous and editor-agnostic: the LSP features run it in a worker thread, the CLI and the
benchmarks call it directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from indexing.foreground import FOREGROUND
from server.config import ProtegeConfig
from server.engine import Engine, LineSearch
from server.postprocess import CursorContext, postprocess
from server.prompt import ContextItem, PromptBuilder
from server.scheduler import SuggestionCache

log = logging.getLogger(__name__)

ContextProvider = Callable[[str, str, int, int], list[ContextItem]]
# (document, line, character, suggestion, language) -> a security.screen.ScreenResult-like object
Screen = Callable[[str, int, int, str, str], Any]


MEMORY_TAIL_CHARS = 400  # document text before the cursor that memory queries see (they use 48 tokens at most)
MAX_SOURCES = 3
MIN_SOURCE_TOKENS = 3  # a shorter copy is an idiom, not a source worth naming


def tokenizer_id(tok: Any) -> str:
    """A short stable id of a tokenizer's vocabulary (memories of two vocabularies are never mixed)."""
    cached = getattr(tok, "_protege_id", None)
    if cached:
        return str(cached)
    import hashlib

    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha1("\n".join(f"{t}\t{i}" for t, i in vocab).encode("utf-8")).hexdigest()[:12]
    try:
        tok._protege_id = digest
    except AttributeError:
        pass
    return digest


class PositionError(ValueError):
    """A request position that does not exist in the document."""


def utf16_to_index(line_text: str, character: int) -> int:
    """Python string index of an LSP UTF-16 ``character`` offset within ``line_text``."""
    units = 0
    for i, ch in enumerate(line_text):
        if units >= character:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
    if units >= character:
        return len(line_text)
    raise PositionError(f"character {character} is past the end of the line ({units} UTF-16 units)")


def split_at(text: str, line: int, character: int) -> tuple[str, str]:
    """Split ``text`` at an LSP position (UTF-16 units); raises ``PositionError`` if it is not in it."""
    if line < 0 or character < 0:
        raise PositionError(f"position ({line}, {character}) is negative")
    lines = text.split("\n")
    if line >= len(lines):
        raise PositionError(f"line {line} is past the end of the document ({len(lines)} lines)")
    line_text = lines[line].rstrip("\r")
    idx = utf16_to_index(line_text, character)
    offset = sum(len(ln) + 1 for ln in lines[:line]) + idx
    return text[:offset], text[offset:]


@dataclass
class Outcome:
    """One completion's result, with enough detail for the editor, the status and benchmarks."""

    text: str  # "" when there is nothing to show
    source: str  # "model" | "cache" | "typed-ahead" | "none"
    latency_ms: float
    mode: str = "line"
    screen: Any = None  # the ScreenResult, when screened
    blocked: bool = False
    generated_tokens: int = 0
    reused_tokens: int = 0
    prompt_tokens: int = 0
    decode_s: float = 0.0
    context: list[ContextItem] = field(default_factory=list)
    cancelled: bool = False
    memory_tokens: int = 0  # generated tokens the repository memory decided
    sources: list[dict[str, Any]] = field(default_factory=list)  # copied spans: path, line, tokens
    stages_ms: dict[str, float] = field(default_factory=dict)  # where the time went (model requests only)
    generation: Any = None  # the engine's GenerationResult (model requests only; benchmarks read it)


STAGES = ("lookup", "context", "prompt", "memory", "generate", "postprocess", "screen")
STAGE_WINDOW = 200  # recent model requests the status's stage medians cover


def stage_medians(history: Any) -> dict[str, Any]:
    """Median milliseconds per stage over the recent model requests (``protege status``: where time goes)."""
    rows = list(history)
    if not rows:
        return {"requests": 0}
    out: dict[str, Any] = {"requests": len(rows)}
    for stage in (*STAGES, "total"):
        values = sorted(r.get(stage, 0.0) for r in rows)
        out[stage] = round(values[len(values) // 2], 2)
    return out


class CompletionService:
    """Wires config, engine, context provider, security screen and cache into one call."""

    def __init__(self, config: ProtegeConfig, engine: Engine, context_provider: ContextProvider | None = None,
                 screen: Screen | None = None) -> None:
        self.config = config
        self.engine = engine
        self.context_provider = context_provider
        self.screen = screen
        self.cache = SuggestionCache(config.cache_size)
        self._builder: PromptBuilder | None = None
        self._healer: Any = None
        self._lock = threading.Lock()
        self.screen_stats = {"screened": 0, "blocked": 0, "annotated": 0, "unscreened": 0}
        self.memory: Any = None  # indexing.memory.RepoMemory for the engine's tokenizer, made on first use
        self._mix: Any = None  # distill_code.memory_mix.MixWeights
        self._nl_table: Any = None
        self._memory_generation = 0
        self.stage_history: deque[dict[str, float]] = deque(maxlen=STAGE_WINDOW)

    def ensure_memory(self, cache_dir: Any = None, index_config: Any = None) -> Any:
        """The repository memory in the engine's tokenizer (created on first call; the open buffer is memory
        even before the workspace's is built). None until the model is loaded."""
        if not self.engine.ready:
            return None
        with self._lock:
            mem = self.memory
            if mem is None or (cache_dir is not None and mem.cache_dir is None) \
                    or mem.tokenizer_id != tokenizer_id(self.engine.tokenizer):
                from indexing.memory import RepoMemory

                tok = self.engine.tokenizer

                def encode(texts: list[str]) -> list[list[int]]:
                    return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []

                mem = RepoMemory(encode, tokenizer_id(tok), cache_dir, index_config)
                self.memory = mem
            return mem

    def mix_weights(self) -> Any:
        if self._mix is None:
            from pathlib import Path

            from distill_code.memory_mix import load_weights

            weights, warning = load_weights(Path(self.engine.model_path) if self.engine.model_path else None,
                                            self.config.memory.weights or None)
            if warning:
                log.warning("%s", warning)
            log.info("memory mix weights from %s", weights.source)
            self._mix = weights
        return self._mix

    def _memory_hook(self, prompt_prefix: str, text: str, line: int, doc_path: str = "") -> Any:
        """The repository memory for this request (workspace shard plus the open buffer), or None."""
        if not self.config.memory.enabled:
            return None
        mem = self.ensure_memory()
        if mem is None:
            return None
        buffer = mem.buffer_shard(text, line) if self.config.memory.buffer else None
        if mem.shard is None and buffer is None:
            return None
        from server.engine import MemoryHook

        # Only the last tokens before the cursor can match; a tail cut at a line start tokenizes as the file did.
        tail = prompt_prefix[-MEMORY_TAIL_CHARS:]
        if len(prompt_prefix) > MEMORY_TAIL_CHARS and "\n" in tail:
            tail = tail[tail.index("\n"):]
        ids = list(self.engine.tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []
        own = mem.relative(doc_path) if doc_path and buffer is not None else None
        return MemoryHook(query=lambda ctx: mem.query(ctx, buffer, own), context_ids=ids, weights=self.mix_weights())

    def reconfigure(self, config: ProtegeConfig) -> None:
        self.config = config
        self.cache = SuggestionCache(config.cache_size)
        self._builder = None
        self._mix = None

    @property
    def builder(self) -> PromptBuilder:
        if self._builder is None:
            assert self.engine.template is not None
            c = self.config
            layout = c.fim_layout
            if layout == "auto":
                layout = "spm" if self.engine.spm_rate >= 0.25 else "psm"
            budget = self.engine.prompt_budget(c.context_tokens)
            if budget < c.context_tokens:
                log.info("prompt budget %d tokens, not %d: the model was trained on %d-token sequences (card.json)",
                         budget, c.context_tokens, budget)
            self._builder = PromptBuilder(self.engine.tokenizer, self.engine.template, budget,
                                          c.prefix_share, c.suffix_share, layout=layout)
        return self._builder

    def _search(self) -> LineSearch | None:
        """The line search the configuration asks for (``search``), or None for plain greedy decoding."""
        o = self.config.search
        return LineSearch(o.candidates, o.below, o.margin) if o.candidates > 1 else None

    def prompt_context(self) -> bool:
        """Whether completion prompts carry retrieved snippets (``index.promptContext``; "auto": unless the
        model's card says it was trained without them)."""
        mode = self.config.index.prompt_context
        if mode != "auto":
            return mode == "on"
        return self.engine.trained_with_context is not False

    def layout(self) -> str | None:
        """The FIM layout prompts use ("psm" or "spm"), once the model is loaded."""
        return self.builder.layout if self.engine.ready else None

    def healer(self) -> Any:
        """The token healer for the engine's tokenizer (built once), or None when healing is off."""
        if not self.config.healing:
            self.engine.healer = None
            return None
        if self._healer is None:
            try:
                from server.healing import TokenHealer
            except ImportError as exc:
                log.warning("token healing unavailable (%s); completing without it", exc)
                self.config.healing = False
                return None
            self._healer = TokenHealer(self.engine.tokenizer)
        self.engine.healer = self._healer
        return self._healer

    def complete(self, uri: str, text: str, line: int, character: int, language: str = "python",
                 cancel: threading.Event | None = None, path: str | None = None) -> Outcome:
        """Suggestion for the cursor at (line, character). Raises ``PositionError`` for bad positions
        and ``ModelLoadError`` when no model is available. Background indexing steps aside meanwhile."""
        with FOREGROUND.active():
            return self._complete(uri, text, line, character, language, cancel, path)

    def _complete(self, uri: str, text: str, line: int, character: int, language: str,
                  cancel: threading.Event | None, path: str | None) -> Outcome:
        t0 = time.perf_counter()
        prefix, suffix = split_at(text, line, character)
        generation = self.memory.generation if self.memory is not None else 0
        if generation != self._memory_generation:  # a file changed what the memory would suggest
            self.cache = SuggestionCache(self.config.cache_size)
            self._memory_generation = generation
        cached = self.cache.get(uri, prefix, suffix)
        ctx = CursorContext.at(prefix, suffix)
        line_prefix = ctx.line_prefix
        mode = ctx.mode if self.config.multiline else "line"
        if cached is not None:
            return Outcome(text=cached[0], source=cached[1], latency_ms=(time.perf_counter() - t0) * 1000,
                           mode=mode)
        if not self.engine.ready:
            from distill_code.modeling import ModelLoadError

            raise ModelLoadError(self.engine.error or "the model is still loading; try again in a moment")

        stages: dict[str, float] = {}
        mark = [t0]

        def lap(stage: str) -> None:
            now = time.perf_counter()
            stages[stage] = round((now - mark[0]) * 1000, 3)
            mark[0] = now

        lap("lookup")  # splitting the document at the cursor, the memory generation, the cache
        context: list[ContextItem] = []
        if self.context_provider is not None and self.prompt_context():
            try:
                context = self.context_provider(path or uri, text, line, character)
            except Exception as exc:  # retrieval must never cost the user a completion
                log.warning("context retrieval failed (%s); completing without repository context", exc)

        lap("context")
        healer = self.healer()
        heal_removed = ""
        prompt_prefix, prompt_suffix = prefix, suffix
        suffix_plan = None
        if healer is not None:
            plan = healer.plan_prefix(prefix)
            prompt_prefix, heal_removed = plan.prefix, plan.removed
            suffix_plan = healer.plan_suffix(suffix, prefix)
            if suffix_plan.removed:
                prompt_suffix = suffix_plan.suffix
            else:
                suffix_plan = None
        prompt = self.builder.build(prompt_prefix, prompt_suffix, context, heal_removed=heal_removed,
                                    suffix_trim=suffix_plan.removed if suffix_plan else "")
        max_new = self.config.max_new_tokens_line if mode == "line" else self.config.max_new_tokens
        lap("prompt")
        hook = None
        try:
            hook = self._memory_hook(prompt.prefix, text, line, path or uri)
        except Exception as exc:  # the memory must never cost the user a completion
            log.warning("repository memory unavailable for this request (%s); completing without it", exc)
        lap("memory")
        gen = self.engine.generate(prompt.ids, max_new, mode=mode, cancel=cancel, heal_removed=heal_removed,
                                   base_indent=ctx.indent,
                                   extra_stop=suffix_plan.reached if suffix_plan is not None else None,
                                   memory=hook, require_text=_blank_line(prefix, suffix), search=self._search())
        lap("generate")
        if suffix_plan is not None:
            gen.text = suffix_plan.trim(gen.text)
        if gen.stop_reason == "cancelled":
            return Outcome(text="", source="none", latency_ms=(time.perf_counter() - t0) * 1000, mode=mode,
                           cancelled=True)
        assert self.engine.template is not None
        suggestion = postprocess(gen.text, ctx, self.engine.template.stop_strings(), self.config.multiline)
        outcome = Outcome(text=suggestion, source="model" if suggestion else "none", latency_ms=0.0, mode=mode,
                          generated_tokens=gen.tokens, reused_tokens=gen.reused_tokens,
                          prompt_tokens=gen.prompt_tokens, decode_s=gen.elapsed_s, context=prompt.context,
                          memory_tokens=gen.memory_tokens, generation=gen)
        if suggestion and gen.copied:
            outcome.sources = self._sources(gen.copied, path or uri, line)
        lap("postprocess")
        if suggestion and self.screen is not None and self.config.screening.enabled:
            # The screen counts columns in code points (LSP sends UTF-16 units): that is the line prefix's length.
            self._apply_screen(outcome, text, line, len(line_prefix), language)
        lap("screen")
        if outcome.text:
            self.cache.put(uri, prefix, suffix, outcome.text)
        stages["total"] = round((time.perf_counter() - t0) * 1000, 3)
        outcome.stages_ms = stages
        self.stage_history.append(stages)
        outcome.latency_ms = (time.perf_counter() - t0) * 1000
        return outcome

    def _sources(self, copied: list[Any], doc_path: str, line: int) -> list[dict[str, Any]]:
        """Where the copied spans came from: workspace path and 1-based line of the match."""
        out: list[dict[str, Any]] = []
        tok = self.engine.tokenizer
        for span in sorted(copied, key=lambda c: -c.tokens)[:MAX_SOURCES]:
            if span.tokens < MIN_SOURCE_TOKENS:
                continue
            where = span.shard.locate(span.pos)
            if where is None:
                continue
            fspan, offset = where
            at = 1 + int(self._newlines(tok)[span.shard.file_tokens(fspan)[:offset]].sum())
            path = fspan.path
            if path == "<buffer:before>":
                path = doc_path
            elif path == "<buffer:after>":
                path, at = doc_path, at + line + 1
            same = next((o for o in out if o["path"] == path and o["line"] == at), None)
            if same is not None:
                same["tokens"] += span.tokens  # one source copied in two runs (a token the model chose between)
            else:
                out.append({"path": path, "line": at, "tokens": span.tokens})
        return out

    def _newlines(self, tok: Any) -> Any:
        """Newlines in each token id's text (line numbers of copied spans without decoding whole files)."""
        if self._nl_table is None:
            import numpy as np

            size = max(len(tok), max(tok.get_vocab().values(), default=0) + 1)
            table = np.zeros(size, dtype=np.int32)
            for text, i in tok.get_vocab().items():
                table[i] = tok.convert_tokens_to_string([text]).count("\n")
            self._nl_table = table
        return self._nl_table

    def _apply_screen(self, outcome: Outcome, text: str, line: int, character: int, language: str) -> None:
        """Screen the suggestion (``character`` in code points); a blocked block falls back to its lines
        before the first finding."""
        assert self.screen is not None
        result = self.screen(text, line, character, outcome.text, language)
        self.screen_stats["screened"] += 1
        verdict = getattr(result, "verdict", "unscreened")
        if verdict == "block":
            self.screen_stats["blocked"] += 1
            lines = outcome.text.split("\n")
            first_bad = min((f.line - line for f in result.findings), default=0)
            fallback = "\n".join(lines[:first_bad]).rstrip() if first_bad > 0 else ""
            if fallback.strip():
                again = self.screen(text, line, character, fallback, language)
                if getattr(again, "verdict", "block") != "block":
                    outcome.text, outcome.screen = fallback, again
                    return
            outcome.text, outcome.blocked, outcome.source, outcome.screen = "", True, "none", result
            return
        if verdict == "annotate":
            self.screen_stats["annotated"] += 1
        elif verdict == "unscreened":
            self.screen_stats["unscreened"] += 1
        outcome.screen = result


def _blank_line(prefix: str, suffix: str) -> bool:
    """Whether the cursor sits on a line with nothing but indentation: the user wants a line there."""
    return not prefix.rsplit("\n", 1)[-1].strip() and not suffix.split("\n", 1)[0].strip() and bool(prefix.strip())
