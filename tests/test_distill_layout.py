"""Distillation trains and evaluates a student in the prompt layout and length the server will use for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill_code.encoding import Budget, encode_example, encode_prompt, resolve_layout, template_of
from distill_code.mining import Example
from distill_code.modeling import load_causal_lm
from distill_code.recipe import cap_budget, write_distilled_card
from server.engine import Engine, EngineOptions

EXAMPLE = Example(id="e1", task="fim", kind="line", path="pkg/util.py", language="python",
                  prefix="def area(w, h):\n    return ", middle="w * h\n", suffix="\n\ndef perimeter(w, h):\n    pass\n",
                  context="<file_sep>pkg/shapes.py\nclass Square:\n    side = 1\n")


def test_spm_prompt_is_the_servers_spm_prompt(tiny_model_dir: Path) -> None:
    _, tok = load_causal_lm(tiny_model_dir)
    template = template_of(tok)
    budget = Budget(max_len=256, max_middle=32, layout="spm")
    ids = encode_prompt(EXAMPLE, tok, template, budget, reserve=8)
    served = tok(template.spm(EXAMPLE.prefix, EXAMPLE.suffix, EXAMPLE.context), add_special_tokens=False)["input_ids"]
    assert ids == list(served)  # everything fits: the same tokens, in the same order
    psm = encode_prompt(EXAMPLE, tok, template, Budget(max_len=256, max_middle=32, layout="psm"), reserve=8)
    assert psm == list(tok(template.psm(EXAMPLE.prefix, EXAMPLE.suffix, EXAMPLE.context),
                           add_special_tokens=False)["input_ids"])
    assert psm != ids and sorted(psm) == sorted(ids)  # the same pieces, rearranged
    # "auto" outside `protege distill` (no model to ask) is prefix-suffix-middle.
    assert encode_prompt(EXAMPLE, tok, template, Budget(max_len=256, max_middle=32), reserve=8) == psm
    # The completion follows the prompt, then the end token, whatever the layout.
    enc = encode_example(EXAMPLE, tok, template, budget)
    assert enc.ids[:enc.start] == encode_prompt(EXAMPLE, tok, template, budget, reserve=len(enc.ids) - enc.start)
    fim = tok.convert_tokens_to_ids([template.prefix, template.suffix])
    context_len = len(tok(EXAMPLE.context, add_special_tokens=False)["input_ids"])
    assert enc.ids[context_len:context_len + 2] == fim  # SPM: <prefix><suffix> suffix <middle> prefix
    assert tok.decode(enc.ids[enc.start:-1]) == EXAMPLE.middle


def test_layout_follows_the_students_card(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    assert resolve_layout("auto", model) == "psm"  # no card: the common layout
    (model / "card.json").write_text(json.dumps({"spm_rate": 0.5}))  # the starters' recipe
    assert resolve_layout("auto", model) == "spm"
    assert resolve_layout("psm", model) == "psm"
    with pytest.raises(ValueError, match="layout"):
        resolve_layout("mps", model)


def test_budget_is_capped_at_the_trained_sequence_length(tiny_model_dir: Path, tmp_path: Path) -> None:
    student, teacher = tmp_path / "s", tmp_path / "t"
    for d, n in ((student, 256), (teacher, 512)):
        shutil.copytree(tiny_model_dir, d)
        (d / "card.json").write_text(json.dumps({"seq_len": n}))
    budget = Budget(max_len=384, max_middle=96)
    assert cap_budget(budget, [str(student), str(teacher)]) == {
        "max_len_from": 384, "max_len": 256, "max_middle_from": 96, "max_middle": 64}
    assert (budget.max_len, budget.max_middle) == (256, 64)
    assert cap_budget(budget, [str(student)]) is None  # already within it
    assert cap_budget(Budget(max_len=384), [str(tiny_model_dir)]) is None  # no card: nothing known


def test_distilled_card_tells_the_server_how_to_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    base, out = tmp_path / "base", tmp_path / "out"
    shutil.copytree(tiny_model_dir, base)
    shutil.copytree(tiny_model_dir, out)
    (base / "card.json").write_text(json.dumps({"seq_len": 256, "spm_rate": 0.5}))
    (base / "memory_mix.json").write_text(json.dumps({"stop_below": 0.1}))
    plain = Example(id="e2", task="fim", kind="line", path="a.py", language="python", prefix="x = ", middle="1\n")
    explain = Example(id="e3", task="explain", kind="doc", path="a.py", language="python", prefix="def f(): pass")
    write_distilled_card(out, base, Budget(max_len=256, layout="spm"), [EXAMPLE, plain, explain], ["teacher-dir"])
    card = json.loads((out / "card.json").read_text())
    assert card["spm_rate"] == 1.0 and card["seq_len"] == 256 and card["context_rate"] == 0.5
    assert json.loads((out / "memory_mix.json").read_text()) == {"stop_below": 0.1}
    e = Engine(EngineOptions(model=str(out)))
    e.load()
    assert e.ready and e.spm_rate == 1.0 and e.trained_context == 256 and e.trained_with_context is True
