"""Teacher/student vocabulary alignment: equal, teacher-extends-student (sliced), or cross-tokenizer.

Logit distillation compares distributions token by token, so both models must index the
same tokens. Equal vocabularies need nothing; a teacher whose vocabulary extends the
student's (Qwen2.5-Coder 7B vs 3B differ only in padding rows of the output layer) has its
logits sliced to the student's width, which renormalises over the shared tokens. Anything
else is an error unless a cross-tokenizer loss (ULD) is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

CROSS_TOKENIZER_LOSSES = ("uld",)


class VocabMismatchError(ValueError):
    """Teacher and student vocabularies cannot be compared token by token."""


@dataclass(frozen=True)
class VocabAlignment:
    """How teacher logits map onto the student's vocabulary."""

    mode: str  # "equal" | "sliced" | "cross"
    student_width: int
    teacher_width: int

    def teacher_logits(self, logits: Tensor) -> Tensor:
        """Teacher logits restricted to the student's vocabulary (unchanged when equal or cross)."""
        if self.mode == "sliced":
            return logits[..., : self.student_width]
        return logits

    @property
    def token_level(self) -> bool:
        """Whether token-level losses (KL, JSD, TVD, sparse top-k) apply."""
        return self.mode in ("equal", "sliced")


def output_width(model: Any) -> int:
    """Number of rows in the model's output layer (may exceed the tokenizer's size: padding rows)."""
    emb = model.get_output_embeddings()
    if emb is not None and getattr(emb, "weight", None) is not None:
        return int(emb.weight.shape[0])
    return int(model.config.vocab_size)


def align_vocabularies(student_tok: Any, teacher_tok: Any, student_width: int, teacher_width: int,
                       cross_tokenizer_loss: str | None = None) -> VocabAlignment:
    """Decide how to compare the two models' distributions, or raise ``VocabMismatchError``.

    ``*_width`` are the output-layer sizes (``output_width``), which can exceed ``len(tokenizer)``.
    """
    s_vocab: dict[str, int] = student_tok.get_vocab()
    t_vocab: dict[str, int] = teacher_tok.get_vocab()
    if cross_tokenizer_loss is not None and cross_tokenizer_loss not in CROSS_TOKENIZER_LOSSES:
        raise VocabMismatchError(
            f"unknown cross-tokenizer loss {cross_tokenizer_loss!r}; choose one of {CROSS_TOKENIZER_LOSSES}"
        )
    same_tokens = all(t_vocab.get(tok) == idx for tok, idx in s_vocab.items())
    if same_tokens and max(s_vocab.values(), default=-1) < student_width <= teacher_width:
        mode = "equal" if student_width == teacher_width else "sliced"
        extra_real = [tok for tok, idx in t_vocab.items() if idx < student_width and tok not in s_vocab]
        if extra_real:
            # The teacher has real tokens at ids the student uses as padding: slicing would mix them up.
            raise VocabMismatchError(
                f"the teacher's tokens {extra_real[:3]} sit inside the student's vocabulary range but the "
                "student does not know them; use a teacher with the student's tokenizer or a cross-tokenizer loss"
            )
        return VocabAlignment(mode, student_width, teacher_width)
    if cross_tokenizer_loss is not None:
        return VocabAlignment("cross", student_width, teacher_width)
    missing = sum(1 for tok, idx in s_vocab.items() if t_vocab.get(tok) != idx)
    raise VocabMismatchError(
        f"teacher and student vocabularies differ ({missing} of the student's {len(s_vocab)} tokens are "
        f"missing or renumbered in the teacher's; output widths {teacher_width} vs {student_width}); use a "
        "teacher from the student's model family or set loss.cross_tokenizer = \"uld\" in the recipe"
    )


def align_models(student: Any, student_tok: Any, teacher: Any, teacher_tok: Any,
                 cross_tokenizer_loss: str | None = None) -> VocabAlignment:
    """``align_vocabularies`` with the widths read from the two models."""
    return align_vocabularies(student_tok, teacher_tok, output_width(student), output_width(teacher),
                              cross_tokenizer_loss)
