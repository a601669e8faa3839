"""Explanation logic called directly: outline, fact gathering, the security screen, prompts, budgets, CLI.

Real tree-sitter, real Bandit, and the tiny random-init model for the generated summary (its text is noise:
the tests check budgets, caching, cancellation and labelling, not wording). The index and the
language server are exercised end to end in test_explain_e2e.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.explain import ExplainCancelled, ExplainContext, ExplainInputError, ExplainRequest, explain
from server.explain_cli import parse_location
from server.explain_code import code_language, outline, word_at
from server.explain_hover import hover
from server.explain_summary import build_prompt, clean_summary, fit_prompt, generate_summary, unusable
from server.features.explain import parse_arguments

SOURCE = '''import subprocess


def helper(x):
    return x * 2


@staticmethod
def compute(items, scale=1):
    """Double every item, then scale it."""
    out = [helper(i) for i in items]
    return [o * scale for o in out]


class Runner:
    def run(self, cmd):
        subprocess.call(cmd, shell=True)
        return compute([1, 2])


def danger():
    value = eval(input())
    return value
'''
LINES = SOURCE.split("\n")


def at(needle: str) -> int:
    return next(n for n, ln in enumerate(LINES) if needle in ln)


def request(start: int, end: int | None = None, *, text: str = SOURCE, path: str = "pkg/mod.py",
            start_char: int = 0, end_char: int = 0, **kw: object) -> ExplainRequest:
    end = start if end is None else end
    return ExplainRequest(uri=f"file:///ws/{path}", path=path, text=text, language_id=None, start_line=start,
                          start_char=start_char, end_line=end, end_char=end_char, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):  # noqa: ANN201 - server.engine.Engine
    from server.engine import Engine, EngineOptions

    e = Engine(EngineOptions(model=str(tiny_model_dir)))
    e.load()
    assert e.ready, e.error
    return e


def test_outline_python_definitions_docstrings_and_calls() -> None:
    o = outline(SOURCE, "python")
    by_name = {d.name: d for d in o.definitions}
    assert by_name["compute"].signature == "def compute(items, scale=1):"
    assert by_name["compute"].docstring == "Double every item, then scale it."
    assert by_name["compute"].doc_line == at('"""Double')
    assert by_name["run"].kind == "method" and by_name["Runner"].kind == "class"
    assert by_name["helper"].docstring is None
    assert [c.name for c in o.calls_in(by_name["compute"].start_line, by_name["compute"].end_line)] == ["helper"]
    assert o.innermost(at("subprocess.call")) == by_name["run"]
    assert o.innermost(0) is None


def test_outline_javascript_comment_doc_and_language_ids() -> None:
    js = "// Adds two numbers.\nfunction add(a, b) { return sum(a, b); }\nclass A { m() { return add(1, 2); } }\n"
    o = outline(js, "javascript")
    add = o.named("add")[0]
    assert add.docstring == "Adds two numbers." and add.doc_line == 0
    assert o.named("m")[0].kind == "method"
    assert code_language("typescriptreact", "x.tsx") == "tsx"
    assert code_language(None, "lib/x.py") == "python"
    assert code_language("markdown", "README.md") is None
    assert word_at("    return helper(x)", 12) == "helper" and word_at("   ", 1) is None


def test_cursor_in_function_gives_definition_facts_and_in_file_callers() -> None:
    result = explain(request(at("out = [helper")), ExplainContext(index_note="no index here"))
    assert result.symbol == "compute" and result.error is None
    kinds = {f.kind for f in result.facts}
    assert {"signature", "definition", "docstring", "caller", "callee", "screen"} <= kinds
    callers = [(f.text, f.line) for f in result.facts if f.kind == "caller"]
    assert callers == [("`run`", at("return compute("))]
    callee = next(f for f in result.facts if f.kind == "callee")
    assert callee.line == at("def helper") and "defined in this file" in callee.text
    md = result.markdown()
    assert f"[pkg/mod.py:{at('def compute') + 1}](file:///ws/pkg/mod.py#L{at('def compute') + 1})" in md
    assert result.hints and "no index here" in result.hints[0] and "protege index" in md
    assert result.summary is None and "No generated summary" in md


def test_selection_modes() -> None:
    # A selection that is one definition plus its decorator explains that definition.
    whole = explain(request(at("@staticmethod"), at("return [o * scale") + 1), ExplainContext())
    assert whole.symbol == "compute" and any(f.kind == "signature" for f in whole.facts)
    # Part of a function: the lines themselves, inside their function.
    part = explain(request(at("out = [helper"), at("out = [helper"), end_char=10), ExplainContext())
    assert part.title.startswith("Lines") and any(f.kind == "enclosing" and "compute" in f.text for f in part.facts)
    # Two functions: both listed as contained definitions.
    both = explain(request(at("def helper"), at("return [o * scale") + 1), ExplainContext())
    assert [f.text.split("`")[1] for f in both.facts if f.kind == "contains"] == [
        "def helper(x):", "def compute(items, scale=1):"]


def test_security_findings_use_the_document_around_the_selection() -> None:
    danger = explain(request(at("eval(input())"), at("eval(input())") + 1), ExplainContext())
    assert [(f["test_id"], f["line"]) for f in danger.findings] == [("B307", at("eval(input())"))]
    # The import sits far above the selection: the screen still knows `subprocess`.
    shell = explain(request(at("subprocess.call"), at("subprocess.call") + 1), ExplainContext())
    assert "B602" in {f["test_id"] for f in shell.findings}
    safe = explain(request(at("return x * 2")), ExplainContext())
    assert safe.findings == [] and any("No insecure" in f.text for f in safe.facts)


def test_bad_input_is_answered_clearly() -> None:
    with pytest.raises(ExplainInputError, match="outside the document"):
        explain(request(999), ExplainContext())
    nothing = explain(request(at("import subprocess")), ExplainContext())
    assert nothing.error and "cursor inside a function" in nothing.error
    blank = explain(request(1, 2), ExplainContext())
    assert blank.error and "whitespace" in blank.error
    notes = explain(request(0, text="# Title\n", path="NOTES.md"), ExplainContext())
    assert notes.error and "not in a supported language" in notes.error and "markdown" in notes.error
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ExplainCancelled):
        explain(request(at("out = [helper")), ExplainContext(), cancel)


def test_prompt_leaves_out_the_existing_docstring() -> None:
    d = outline(SOURCE, "python").named("compute")[0]
    p = build_prompt(LINES, d.start_line, d.end_line, "python", d)
    assert p.style == "docstring" and p.prefix.endswith('    """') and "def compute" in p.prefix
    assert "Double every item" not in p.prefix + p.suffix and "out = [helper" in p.suffix
    js = "function add(a, b) {\n  return a + b;\n}\n"
    jd = outline(js, "javascript").named("add")[0]
    q = build_prompt(js.split("\n"), jd.start_line, jd.end_line, "javascript", jd)
    assert q.style == "comment" and q.prefix == "// " and q.suffix.startswith("\nfunction add")


def test_clean_summary() -> None:
    stops = ("<|endoftext|>", "<fim_prefix>")
    assert clean_summary(' Double  every\n item."""\n    out = 1', "docstring", stops) == "Double every item."
    assert clean_summary("Adds.\n\nMore text", "docstring", stops) == "Adds."
    assert clean_summary("sums two numbers<|endoftext|>junk", "comment", stops) == "sums two numbers"
    assert clean_summary("// sums\nfunction", "comment", stops) == "sums"


def test_unreadable_summaries_are_not_shown() -> None:
    # What the v1 starter student wrote for a function in the VS Code e2e run, and other noise.
    assert unusable("0x00 -> 0x00 -> 0x00 -> 0x00'") == "mostly symbols and digits"
    assert unusable("the the the the the the the") == "one word repeated"
    assert unusable("total") == "fewer than three words"
    assert unusable("") is None
    assert unusable("Return the subtotal with tax added, rounded to cents.") is None
    assert unusable("Parse `x` into a list of (key, value) pairs.") is None


def test_generated_summary_budget_cache_and_cancel(engine) -> None:  # noqa: ANN001
    long_body = "\n".join(f"    total += item_{i} * {i}" for i in range(200))
    text = f"def big(items):\n    total = 0\n{long_body}\n    return total\n"
    d = outline(text, "python").named("big")[0]
    prompt = build_prompt(text.split("\n"), d.start_line, d.end_line, "python", d)
    ids = fit_prompt(prompt, engine.tokenizer, engine.template, 96)
    assert len(ids) <= 96 + 4  # decode/encode round trips may merge or split a token at the cut
    first = generate_summary(engine, prompt, 5, 96)
    assert first.tokens <= 5 and first.prompt_tokens <= 100 and not first.cached
    again = generate_summary(engine, prompt, 5, 96)
    assert again.cached and again.text == first.text
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ExplainCancelled):
        generate_summary(engine, prompt, 6, 96, cancel)


def test_explain_with_model_marks_the_summary_as_generated(engine) -> None:  # noqa: ANN001
    result = explain(request(at("return x * 2"), max_new_tokens=8), ExplainContext(engine=engine))
    assert result.summary is not None and result.summary.prompt_tokens > 0 and result.summary.tokens <= 8
    data = result.to_dict()
    assert data["summary"]["generated"] is True
    md = data["markdown"]
    if result.summary.text:
        assert "generated by the local model" in md and f"> {result.summary.text}" in md
    else:
        assert "the model produced no text" in md
    # The facts do not depend on the model: the same request without it gives the same facts.
    without = explain(request(at("return x * 2"), max_new_tokens=8), ExplainContext())
    assert [f.to_dict() for f in without.facts] == [f.to_dict() for f in result.facts]


def test_hover_prefers_docstring_and_generates_only_without_one(engine) -> None:  # noqa: ANN001
    ctx = ExplainContext(engine=engine)
    line = at("out = [helper")
    documented = hover(SOURCE, "pkg/mod.py", "file:///ws/pkg/mod.py", "python", at("return compute("),
                       LINES[at("return compute(")].index("compute") + 2, ctx)
    assert documented is not None and "Double every item" in documented.markdown
    assert "Generated" not in documented.markdown
    undocumented = hover(SOURCE, "pkg/mod.py", "file:///ws/pkg/mod.py", "python", line,
                         LINES[line].index("helper") + 1, ctx, max_new_tokens=6)
    assert undocumented is not None and "def helper(x):" in undocumented.markdown
    assert f"pkg/mod.py:{at('def helper') + 1}" in undocumented.markdown
    assert hover(SOURCE, "pkg/mod.py", "file:///ws/pkg/mod.py", "python", 1, 0, ctx) is None


def test_command_arguments() -> None:
    rng = {"start": {"line": 3, "character": 1}, "end": {"line": 5, "character": 0}}
    assert parse_arguments(({"uri": "file:///a.py", "range": rng},)) == ("file:///a.py", (3, 1, 5, 0), 96)
    assert parse_arguments(("file:///a.py", 7)) == ("file:///a.py", (7, 0, 7, 0), 96)
    assert parse_arguments((["file:///a.py", 7],))[1] == (7, 0, 7, 0)
    assert parse_arguments(({"uri": "file:///a.py", "line": 2, "maxTokens": 12},))[2] == 12
    from pygls.exceptions import JsonRpcInvalidParams

    for bad in ((), ({"range": rng},), ("file:///a.py", "7"), ({"uri": "u", "line": 1, "maxTokens": 5000},)):
        with pytest.raises(JsonRpcInvalidParams):
            parse_arguments(bad)


def test_cli_location_parsing_and_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_location("my-file.py:3") == (Path("my-file.py"), 2, None)
    assert parse_location("a/b.py:3-5") == (Path("a/b.py"), 2, 4)
    for bad in ("a.py", "a.py:0", "a.py:5-3"):
        with pytest.raises(ValueError):
            parse_location(bad)
    from server.cli import main

    (tmp_path / "mod.py").write_text(SOURCE, encoding="utf-8")
    (tmp_path / "NOTES.md").write_text("# Notes\n", encoding="utf-8")
    assert main(["explain", f"{tmp_path / 'mod.py'}:{at('out = [helper') + 1}", "--workspace", str(tmp_path),
                 "--no-summary"]) == 0
    out = capsys.readouterr().out
    assert "`compute` — function in `mod.py`" in out and "protege index" in out
    assert main(["explain", f"{tmp_path / 'NOTES.md'}:1", "--workspace", str(tmp_path), "--no-summary"]) == 1
    assert "not in a supported language" in capsys.readouterr().err
    assert main(["explain", f"{tmp_path / 'mod.py'}", "--no-summary"]) == 2
    assert main(["explain", f"{tmp_path / 'mod.py'}:900", "--workspace", str(tmp_path), "--no-summary"]) == 2
    assert "outside the document" in capsys.readouterr().err
