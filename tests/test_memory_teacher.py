"""The ∞-gram as a teacher-ensemble member: it moves the targets toward what the *other* files say, never
toward the example's own answer, and leaves the end-of-middle token to the neural teacher."""

from __future__ import annotations

from pathlib import Path

import torch

from distill_code.encoding import Budget, encode_example
from distill_code.fim import template_for
from distill_code.memory_mix import MixWeights
from distill_code.memory_teacher import MemoryTeacher, build_shard, repository_texts
from distill_code.mining import Example
from distill_code.modeling import LlamaShape, build_llama
from distill_code.targets import LocalTeacher
from distill_code.vocab import align_models

ROOT = Path(__file__).resolve().parents[1]


def _tok():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ROOT / "distill_code" / "starter" / "student"))


def _fim(path: str, text: str, middle: str, id_: str) -> Example:
    i = text.index(middle)
    return Example(id_, "fim", "line", path, "python", text[:i], middle, text[i + len(middle):])


def test_memory_member_pulls_targets_toward_other_files_only() -> None:
    tok = _tok()
    shared = "    return configure_widget_factory(settings, retries=7)\n"
    own = "    return zebra_quokka_unique_call(settings)\n"
    a = f"import os\n\n\ndef make(settings):\n{shared}"          # another file with the shared line
    b = f"import os\n\n\ndef build(settings):\n{shared}\n\ndef other(settings):\n{own}"
    examples = [_fim("pkg/a.py", a, shared, "a1"), _fim("pkg/b.py", b, shared, "b1"), _fim("pkg/b.py", b, own, "b2")]
    template = template_for("starcoder")
    torch.manual_seed(0)
    model = build_llama(LlamaShape(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=2, intermediate_size=64), vocab_size=len(tok),
                        eos_token_id=tok.eos_token_id)
    model.eval()
    base = LocalTeacher([model], [1.0], align_models(model, tok, model, tok), "rev0")
    shard = build_shard(repository_texts(examples), tok)
    fim_ids = tuple(tok.convert_tokens_to_ids(t) for t in (template.prefix, template.suffix, template.middle))
    teacher = MemoryTeacher(base, shard, {x.id: x.path for x in examples}, MixWeights(), fim_ids)  # type: ignore[arg-type]
    assert teacher.revision.startswith("rev0+mem:") and teacher.revision != base.revision

    budget = Budget(max_len=128, max_middle=32)
    enc_shared = encode_example(examples[1], tok, template, budget)  # b's copy of the shared line
    enc_own = encode_example(examples[2], tok, template, budget)
    # The left context is the file's text before the completion, wherever the FIM layout put it.
    assert tok.decode(teacher.left_context(enc_shared)).endswith("def build(settings):\n")
    plain = base.completion_logprobs([enc_shared, enc_own], int(tok.pad_token_id or 0))
    mixed = teacher.completion_logprobs([enc_shared, enc_own], int(tok.pad_token_id or 0))
    mid_shared = enc_shared.ids[enc_shared.start:]
    # The shared line also lives in pkg/a.py: the memory raises the reference tokens' probability.
    gain = [float(mixed[0][j, t] - plain[0][j, t]) for j, t in enumerate(mid_shared[:-1])]
    assert sum(g > 0.5 for g in gain) >= len(gain) // 2, gain
    # The unique call exists only in the example's own file, which is left out: after the common
    # "    return " the memory knows nothing of "zebra_quokka..." and cannot leak it.
    mid_own = enc_own.ids[enc_own.start:]
    word = tok("zebra", add_special_tokens=False)["input_ids"][0]
    where = mid_own.index(word) if word in mid_own else None
    if where is not None:
        assert float(mixed[1][where, word]) <= float(plain[1][where, word]) + 1e-4
    # The end-of-middle row is the neural teacher's alone.
    assert torch.allclose(mixed[0][-1], plain[0][-1], atol=1e-5)
    assert teacher.stats.tokens_mixed > 0 and teacher.stats.tokens_scored == len(mid_shared) + len(mid_own)
