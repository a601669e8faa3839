"""Fragment repair and scoping on real incomplete code (cuts of Bandit's example files)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from security.pyfragment import (
    choose_scope,
    collect_imports,
    lex,
    parseable_segment,
    parses,
    repair,
    skeleton,
    trim_partial_argument,
)


def _corpus(shared_data: Path) -> Path:
    return shared_data / "bandit-examples"


def test_repair_closes_what_real_cuts_leave_open(shared_data: Path) -> None:
    """Cut real statements after every bracket, comma, '=' and inside strings: the repair parses and keeps the cut."""
    cut_points = re.compile(r"[(\[{,=]|'[^']|\"[^\"]")
    tried = repaired = 0
    for name in ("subprocess_shell.py", "sql_statements.py", "yaml_load.py", "hardcoded-passwords.py",
                 "requests-ssl-verify-disabled.py", "try_except_pass.py", "jinja2_templating.py"):
        source = (_corpus(shared_data) / name).read_text()
        tree = ast.parse(source)
        lines = source.split("\n")
        for node in tree.body:
            text = "\n".join(lines[node.lineno - 1:node.end_lineno])
            for m in cut_points.finditer(text):
                fragment = text[: m.end()]
                if parses(fragment) is None:
                    continue
                tried += 1
                fixed, err = repair(fragment)
                if err is None:
                    repaired += 1
                    # Kept as cut, except an unfinished argument after keyword ones, which is dropped.
                    assert fixed.startswith(fragment) or fixed.startswith(trim_partial_argument(fragment))
    assert tried > 500
    assert repaired / tried >= 0.97, (repaired, tried)


def test_repair_cases() -> None:
    cases = {
        'subprocess.call("ls -l", shell=True': ")",
        'subprocess.call(["/bin/ls",\n                 "-l"': "])",
        "x = yaml.load(open(f": "))",
        'def f(password="blah"': "):\n    ...",
        "try:\n    a = 1\nexcept:": "\n    ...",
        "try:\n    a = eval(x)": "\nfinally:\n    pass",
        "def g():\n    try:\n        if a:": "\n            ...\n    finally:\n        pass",
        "query = \"SELECT * FROM t WHERE id = '%s'\" %": " _",
        'q = """SELECT *\nFROM t WHERE x = ': '"""',
        'd = {"password":': " _}",
        "call(x, shell=": " _)",
        "with open(f) as g": ":\n    ...",
        "subprocess.Popen('/bin/ls *', shell=True  # nosec": "\n)",
    }
    for fragment, suffix in cases.items():
        fixed, err = repair(fragment)
        assert err is None, fragment
        assert fixed == fragment + suffix, (fragment, fixed)


def test_repair_reports_what_cannot_be_fixed() -> None:
    fixed, err = repair("def f(:\n  )))")
    assert err is not None and parses(fixed) is not None


def test_lex_ignores_brackets_in_strings_and_comments() -> None:
    state = lex("x = f('(', \"[\", '''{\n''',  # ( [\n  y")
    assert state.brackets == ["("]
    assert lex("s = 'abc").open_quote == "'"
    assert lex("a = b + \\\n").continued


def test_scope_of_a_method_keeps_its_indentation_with_wrappers() -> None:
    lines = [
        "import os",
        "class A(Base):",
        "    x = 1",
        "",
        "    @property",
        "    def f(self):",
        "        a = 1",
        "        return os.system(a)",
        "",
        "    def g(self):",
        "        pass",
    ]
    start, end, wrappers = choose_scope(lines, 7, 7)
    assert (start, wrappers) == (4, [""])  # the decorator starts the scope; the class becomes `if True:`
    assert end == 9
    segment, error = parseable_segment(lines, 7, 7, [])
    assert segment is not None and segment.kind == "scope", error
    assert segment.text.startswith("if True:\n    @property\n")
    assert segment.line_map[0] is None and segment.line_map[1:4] == [4, 5, 6]


def test_scope_of_a_top_level_clause_reaches_back_to_its_statement() -> None:
    lines = ["try:", "    a = 1", "except:", "    pass", "x = 2"]
    start, end, _ = choose_scope(lines, 2, 3)
    assert (start, end) == (0, 4)


def test_fragment_in_a_function_is_cut_after_its_statement_and_repaired() -> None:
    lines = ["import subprocess", "def f(cmd):", "    subprocess.call(cmd, shell=True", "    return 1"]
    segment, error = parseable_segment(lines, 2, 2, [])
    assert segment is not None and segment.tree is not None, error
    assert segment.kind == "scope"
    assert "shell=True)" in segment.text and "return 1" not in segment.text


def test_scope_keeps_the_rest_of_an_except_handler() -> None:
    """`except: pass` followed by more code is not B110: the handler's rest must stay in the scope."""
    lines = ["def f():", "    try:", "        a = 1", "    except Exception:", "        pass", "        a = 2",
             "    return a"]
    start, end, _ = choose_scope(lines, 4, 4)
    assert (start, end) == (0, 6)


def test_scope_of_a_try_body_is_closed_by_the_repair() -> None:
    lines = ["def f(x):", "    try:", "        y = eval(x)", "        z = 2", "    except ValueError:", "        raise"]
    segment, error = parseable_segment(lines, 2, 2, [])
    assert segment is not None and segment.tree is not None, error
    assert "finally:" in segment.text and "z = 2" not in segment.text


def test_scope_budget_narrows_to_the_statement() -> None:
    lines = ["def big():"] + [f"    x{i} = {i}" for i in range(600)] + ["    y = eval(z)"]
    segment, _ = parseable_segment(lines, 601, 601, [], max_lines=100)
    assert segment is not None and segment.kind == "statement-repaired"
    assert segment.text.count("\n") < 10


def test_collect_imports_joins_multiline_and_drops_broken_ones() -> None:
    doc = "import os\nfrom a import (\n    b,\n    c,\n)\nimport = broken\n  import sys\nx = 1\n"
    imports = collect_imports(doc, len(doc))
    assert imports == ["import os", "from a import ( b, c, )", "import sys"]


def test_skeleton_keeps_only_the_headers_above_the_suggestion() -> None:
    body = [f"        x{i} = {i}" for i in range(50)]
    lines = ["def f(a,", "      b):", "    try:", *body, "    except ValueError:", "        if a:",
             "            y = 1", "            z = eval(b)"]
    first = len(lines) - 1
    start, _end, _ = choose_scope(lines, first, first)
    kept = skeleton(lines, start, first)
    assert kept is not None and len(kept) == first - start
    assert [k for k in kept if k.strip()] == ["def f(a,", "      b):", "    try:", "        pass",
                                              "    except ValueError:", "        if a:"]
    segment, error = parseable_segment(lines, first, first, [])
    assert segment is not None and segment.kind == "skeleton", error
    assert segment.line_map[: first + 1] == list(range(first + 1))  # blanked, never renumbered


def test_skeleton_finds_what_the_full_scope_finds_on_real_code() -> None:
    """On the stdlib's subprocess.py (long methods), screening with and without the skeleton agrees."""
    import inspect
    import subprocess

    from security import pyfragment
    from security.scenarios import scenarios_for_source
    from security.screen import screen_suggestion

    source = Path(inspect.getsourcefile(subprocess) or "").read_text()
    scenarios = scenarios_for_source("subprocess.py", source)[::25]
    used = 0
    default = pyfragment.SKELETON_MIN_LINES
    try:
        for sc in scenarios:
            pyfragment.SKELETON_MIN_LINES = default
            fast = screen_suggestion(sc.document, sc.line, sc.character, sc.suggestion)
            pyfragment.SKELETON_MIN_LINES = 10**9
            full = screen_suggestion(sc.document, sc.line, sc.character, sc.suggestion)
            used += fast.scope == "skeleton"
            assert [f.to_dict() for f in fast.findings] == [f.to_dict() for f in full.findings], (sc.line, sc.kind)
            assert fast.verdict == full.verdict
    finally:
        pyfragment.SKELETON_MIN_LINES = default
    assert used > 10
