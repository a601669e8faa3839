"""FIM templates: layouts and family detection."""

import pytest

from distill_code.fim import TEMPLATES, template_for


def test_psm_layout_starcoder() -> None:
    t = template_for("starcoder")
    assert t.psm("a = ", "\nb") == "<fim_prefix>a = <fim_suffix>\nb<fim_middle>"
    assert t.spm("a = ", "\nb") == "<fim_prefix><fim_suffix>\nb<fim_middle>a = "


def test_family_detected_from_vocab() -> None:
    assert template_for(None, {"<|fim_prefix|>", "<|fim_middle|>"}).family == "qwen2.5-coder"
    assert template_for("auto", {"<fim_prefix>", "<fim_middle>"}).family == "starcoder"
    assert template_for(None, {"<｜fim▁begin｜>", "<｜fim▁end｜>"}).family == "deepseek-coder"


def test_unknown_family_is_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown FIM family"):
        template_for("gpt-99")


def test_every_template_has_stops() -> None:
    for t in TEMPLATES.values():
        assert t.eos in t.stop_strings()
