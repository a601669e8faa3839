"""Completion prompts: fill-in-the-middle layout under token budgets for prefix, suffix and context.

The layout comes from ``distill_code.fim`` so serving matches training. Budgets follow the
Continue-style shares: the suffix is capped at ``suffix_share`` of the budget, the prefix is
guaranteed ``prefix_share``, retrieved context takes what is left and the prefix gets the rest.
The prefix window starts on a stable line boundary so that consecutive prompts share a long
token prefix and the engine can reuse its KV cache while the user types; with the
suffix-prefix-middle layout (for models trained on it) the suffix is also before the cursor's
new characters, so only those are recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill_code.fim import FimTemplate

# The prefix window moves in steps of this many lines, so typing does not shift its start.
WINDOW_STEP_LINES = 16
# A window cut at a line start tokenizes to at most a couple of tokens more than the tokens starting
# inside it in the longer text; estimates this far under budget skip the exact count.
ESTIMATE_MARGIN = 4


@dataclass
class ContextItem:
    """One retrieved snippet offered to the prompt (filled by the indexing hook)."""

    path: str
    text: str
    score: float = 0.0


@dataclass
class Prompt:
    text: str
    ids: list[int]
    prefix: str  # the part of the document prefix that made it into the prompt
    suffix: str
    context: list[ContextItem] = field(default_factory=list)
    heal_removed: str = ""  # characters backed off for token healing (generation must reproduce them)
    suffix_trim: str = ""  # word remainder moved out of the suffix by healing


class PromptBuilder:
    """Builds token-budgeted FIM prompts for one tokenizer and template."""

    def __init__(self, tokenizer: Any, template: FimTemplate, budget_tokens: int = 1024,
                 prefix_share: float = 0.3, suffix_share: float = 0.2, layout: str = "psm") -> None:
        if layout not in ("psm", "spm"):
            raise ValueError(f"FIM layout must be 'psm' or 'spm', got {layout!r}")
        self.layout = layout
        self.tok = tokenizer
        self.template = template
        self.budget = budget_tokens
        self.prefix_share = prefix_share
        self.suffix_share = suffix_share

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) if text else 0

    def _token_starts(self, text: str) -> list[int] | None:
        """Character offset where each token of ``text`` starts (None for tokenizers without offsets)."""
        try:
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, ValueError, TypeError):
            return None
        return [int(a) for a, _ in enc["offset_mapping"]]

    def _fit_prefix(self, prefix: str, budget: int) -> str:
        """Longest tail of ``prefix`` that fits ``budget`` tokens and starts on a stable line."""
        if budget <= 0:
            return ""
        # Cheap pre-cut: tokens are rarely shorter than 1 char, so 8 chars/token bounds the work.
        lines = prefix.split("\n")
        n = len(lines)
        start = max(0, n - 1 - (budget * 8) // 40)
        start -= start % WINDOW_STEP_LINES
        # One tokenization with offsets estimates every candidate window; the chosen one is then
        # counted exactly (a window boundary can merge two tokens, so the estimate may be off by one).
        starts = self._token_starts("\n".join(lines[start:]))
        if starts is not None:
            import bisect

            offset, line_at = 0, {}
            for i in range(start, n):
                line_at[i] = offset
                offset += len(lines[i]) + 1
            total = len(starts)
            while start < n - 1 and total - bisect.bisect_left(starts, line_at[start]) > budget:
                start = min(n - 1, start + WINDOW_STEP_LINES - start % WINDOW_STEP_LINES)
            if total - bisect.bisect_left(starts, line_at[start]) <= budget - ESTIMATE_MARGIN:
                return "\n".join(lines[start:])  # clearly within budget: no exact count needed
        while True:
            candidate = "\n".join(lines[start:])
            if self.count(candidate) <= budget:
                return candidate
            if start >= n - 1:
                break
            start = min(n - 1, start + WINDOW_STEP_LINES - start % WINDOW_STEP_LINES)
        # A single line longer than the budget: keep its tail, token-exact.
        ids = self.tok(lines[-1], add_special_tokens=False)["input_ids"]
        return str(self.tok.decode(ids[-budget:]))

    def _fit_suffix(self, suffix: str, budget: int) -> str:
        if budget <= 0 or not suffix:
            return ""
        lines = suffix.split("\n")
        # Approximate then trim by whole lines from the end.
        keep = lines[: max(1, (budget * 8) // 40)]
        starts = self._token_starts("\n".join(keep))
        if starts is not None and len(starts) > budget:
            # Lines whose text ends before the first token past the budget: an estimate, checked below.
            limit = starts[budget]
            offset, fit = 0, 0
            for i, ln in enumerate(keep):
                offset += len(ln)
                if offset > limit:
                    break
                fit = i + 1
                offset += 1
            keep = keep[: max(fit, 0)]
            import bisect

            end = sum(len(ln) for ln in keep) + max(0, len(keep) - 1)
            if keep and bisect.bisect_left(starts, end) <= budget - ESTIMATE_MARGIN:
                return "\n".join(keep)  # clearly within budget: no exact count needed
        elif starts is not None:
            return "\n".join(keep)  # the whole pre-cut fits: that count was exact
        while keep and self.count("\n".join(keep)) > budget:
            keep = keep[:-1]
        return "\n".join(keep)

    def build(self, prefix: str, suffix: str, context: list[ContextItem] | None = None,
              heal_removed: str = "", suffix_trim: str = "") -> Prompt:
        """Assemble the prompt. ``prefix``/``suffix`` are already healed when healing is on."""
        overhead = self.count(self.template.psm("", ""))
        budget = max(16, self.budget - overhead)
        suffix_fit = self._fit_suffix(suffix, int(budget * self.suffix_share))
        used_suffix = self.count(suffix_fit)
        # Only the tail can matter; counting a whole huge document would cost more than the model call.
        # Without context to share the budget with, the prefix's size does not matter here.
        prefix_tokens = self.count(prefix[-budget * 8:]) if context else 0
        prefix_reserved = max(int(budget * self.prefix_share), 1)
        # Context may use what the prefix does not need; the prefix keeps at least its share.
        context_budget = max(0, budget - used_suffix - min(prefix_tokens, prefix_reserved))
        chosen: list[ContextItem] = []
        context_text = ""
        spent = 0
        for item in context or []:
            block = self.template.context_block(item.path, item.text)
            cost = self.count(block)
            if spent + cost > context_budget:
                continue
            chosen.append(item)
            context_text += block
            spent += cost
        prefix_fit = self._fit_prefix(prefix, budget - used_suffix - spent)
        # SPM puts the suffix first: while the user types, everything before the cursor's new
        # characters is unchanged, so the engine reuses nearly the whole KV cache.
        render = self.template.spm if self.layout == "spm" else self.template.psm
        text = render(prefix_fit, suffix_fit, context_text)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return Prompt(text=text, ids=list(ids), prefix=prefix_fit, suffix=suffix_fit, context=chosen,
                      heal_removed=heal_removed, suffix_trim=suffix_trim)
