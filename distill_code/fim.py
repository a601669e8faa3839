"""Fill-in-the-middle templates per model family: the prompt format training and serving share.

A student trained on one prompt format and served with another is silently worse, so both
the trainer (``distill_code``) and the server build prompts only through this module.
"""

from __future__ import annotations

from dataclasses import dataclass

# StarCoder-style special tokens; the starter tokenizer is trained with exactly these.
STARCODER_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<file_sep>",
    "<repo_name>",
)


@dataclass(frozen=True)
class FimTemplate:
    """Special tokens and layout of one model family's FIM prompt."""

    family: str
    prefix: str
    suffix: str
    middle: str
    eos: str
    file_sep: str | None = None
    # Prefix-suffix-middle ("psm") is the common layout; CodeLlama puts a space after <SUF>.
    suffix_leading_space: bool = False
    # Extra stop strings emitted by the family in addition to eos.
    stops: tuple[str, ...] = ()

    def psm(self, prefix: str, suffix: str, context: str = "") -> str:
        """Prefix-suffix-middle prompt; ``context`` (other files) goes before the prefix."""
        sfx = (" " + suffix) if self.suffix_leading_space else suffix
        return f"{context}{self.prefix}{prefix}{self.suffix}{sfx}{self.middle}"

    def spm(self, prefix: str, suffix: str, context: str = "") -> str:
        """Suffix-prefix-middle prompt (StarCoder's SPM variant), used as a training mix."""
        return f"{context}{self.prefix}{self.suffix}{suffix}{self.middle}{prefix}"

    def context_block(self, path: str, text: str) -> str:
        """Render one retrieved snippet as cross-file context for this family."""
        if self.file_sep:
            return f"{self.file_sep}{path}\n{text}\n"
        return f"# {path}\n{text}\n"

    def stop_strings(self) -> tuple[str, ...]:
        tokens = [self.eos, self.prefix, self.suffix, self.middle]
        if self.file_sep:
            tokens.append(self.file_sep)
        return tuple(t for t in (*tokens, *self.stops) if t)


TEMPLATES: dict[str, FimTemplate] = {
    # Our own starter models, StarCoder, StarCoder2.
    "starcoder": FimTemplate("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>", "<file_sep>"),
    "qwen2.5-coder": FimTemplate(
        "qwen2.5-coder",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        "<|endoftext|>",
        "<|file_sep|>",
        stops=("<|fim_pad|>", "<|repo_name|>", "<|im_end|>"),
    ),
    "deepseek-coder": FimTemplate(
        "deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜end▁of▁sentence｜>"
    ),
    "codellama": FimTemplate("codellama", "<PRE> ", " <SUF>", " <MID>", "</s>", suffix_leading_space=False, stops=(" <EOT>", "<EOT>")),
}
TEMPLATES["starcoder2"] = TEMPLATES["starcoder"]
TEMPLATES["protege"] = TEMPLATES["starcoder"]


def template_for(family: str | None, vocab: set[str] | None = None) -> FimTemplate:
    """Return the template for ``family``; with ``family`` unset, detect it from the vocabulary.

    Raises ``ValueError`` naming the known families when ``family`` is unknown.
    """
    if family and family != "auto":
        key = family.lower()
        if key not in TEMPLATES:
            raise ValueError(f"unknown FIM family {family!r}; choose one of {sorted(TEMPLATES)} or 'auto'")
        return TEMPLATES[key]
    if vocab is not None:
        for name in ("qwen2.5-coder", "deepseek-coder", "starcoder"):
            t = TEMPLATES[name]
            if t.prefix in vocab and t.middle in vocab:
                return t
        if "▁<PRE>" in vocab or "<PRE>" in vocab:
            return TEMPLATES["codellama"]
    return TEMPLATES["starcoder"]
