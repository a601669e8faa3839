"""Prompt builder on real code and a real tokenizer: layout, budgets, context, stable windows."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from distill_code.fim import template_for
from server.pipeline import PositionError, split_at
from server.prompt import ContextItem, PromptBuilder

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (ROOT / "server" / "engine.py").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_layout_and_budget(tok) -> None:
    b = PromptBuilder(tok, template_for("starcoder"), budget_tokens=256)
    cut = SOURCE.index("def generate")
    p = b.build(SOURCE[:cut], SOURCE[cut:])
    assert p.text.startswith("<fim_prefix>") and p.text.endswith("<fim_middle>")
    assert len(p.ids) <= 256
    assert SOURCE[:cut].endswith(p.prefix) and SOURCE[cut:].startswith(p.suffix)
    assert b.count(p.suffix) <= int((256 - b.count(b.template.psm("", ""))) * 0.2)


def test_context_fills_remaining_budget_and_is_dropped_when_too_big(tok) -> None:
    b = PromptBuilder(tok, template_for("starcoder"), budget_tokens=300)
    small = ContextItem("lib/util.py", "def helper(x):\n    return x * 2\n")
    huge = ContextItem("lib/huge.py", "y = 1\n" * 500)
    p = b.build("print(helper(", ")\n", [huge, small])
    assert [c.path for c in p.context] == ["lib/util.py"]
    assert p.text.startswith("<file_sep>lib/util.py\n")
    assert len(p.ids) <= 300


def test_window_start_is_stable_while_typing(tok) -> None:
    b = PromptBuilder(tok, template_for("starcoder"), budget_tokens=200)
    cut = SOURCE.index("def generate")
    p1 = b.build(SOURCE[:cut] + "x", "")
    p2 = b.build(SOURCE[:cut] + "xy", "")
    # Same start line: the prompt of the second request extends the first one's token prefix.
    assert p2.prefix.startswith(p1.prefix[:-1])
    common = 0
    while common < min(len(p1.ids), len(p2.ids)) and p1.ids[common] == p2.ids[common]:
        common += 1
    assert common >= len(p1.ids) - 5


def test_other_family_template(tok) -> None:
    b = PromptBuilder(tok, template_for("qwen2.5-coder"), budget_tokens=128)
    p = b.build("a = ", "\n")
    assert p.text == "<|fim_prefix|>a = <|fim_suffix|>\n<|fim_middle|>"


def test_split_at_utf16_and_errors() -> None:
    text = "s = '😀x'\nnext\n"
    assert split_at(text, 0, 7) == ("s = '😀", "x'\nnext\n")  # the emoji is two UTF-16 units
    assert split_at(text, 2, 0) == (text, "")
    with pytest.raises(PositionError):
        split_at(text, 3, 0)
    with pytest.raises(PositionError):
        split_at(text, 1, 9)
    with pytest.raises(PositionError):
        split_at(text, -1, 0)


def _shared(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_spm_layout_keeps_everything_before_the_typed_characters_cacheable(tok) -> None:
    cut = SOURCE.index("def generate") + len("def gen")
    prefix, suffix = SOURCE[:cut], SOURCE[cut:]
    spm = PromptBuilder(tok, template_for("starcoder"), budget_tokens=512, layout="spm")
    psm = PromptBuilder(tok, template_for("starcoder"), budget_tokens=512)
    p1, p2 = spm.build(prefix, suffix), spm.build(prefix + "era", suffix)
    assert p1.text.startswith("<fim_prefix><fim_suffix>" + p1.suffix + "<fim_middle>")
    assert p1.text.endswith(p1.prefix) and SOURCE[:cut].endswith(p1.prefix)
    # Typing three characters changes only the prompt's last tokens with SPM; with PSM the whole
    # suffix after the cursor must be recomputed.
    assert len(p2.ids) - _shared(p1.ids, p2.ids) <= 4
    q1, q2 = psm.build(prefix, suffix), psm.build(prefix + "era", suffix)
    assert len(q2.ids) - _shared(q1.ids, q2.ids) > psm.count(q1.suffix)
    with pytest.raises(ValueError, match="layout"):
        PromptBuilder(tok, template_for("starcoder"), layout="mps")
