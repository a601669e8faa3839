"""The screen on the labelled completions of bench/data/insecure_completions.txt, whole and cut at every
token; the repairs that make cut statements screenable; policy defaults; passwords Bandit misses."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from security.policy import DEFAULT_ANNOTATE_TESTS, Policy
from security.pyfragment import repair, trim_partial_argument
from security.screen import screen_suggestion

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_screen_cuts", ROOT / "bench" / "bench_screen_cuts.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench() -> Any:
    return _bench()


def test_labelled_set_covers_every_bandit_test_that_fires_on_a_completion(bench: Any) -> None:
    cases = bench.load_cases()
    ids = {i for c in cases for i in c.expected}
    # Every Bandit plugin and blacklist call a completion can trigger, and a spread of JS/TS rules.
    wanted = {"B102", "B103", "B104", "B105", "B106", "B107", "B108", "B110", "B112", "B113", "B201", "B202",
              "B301", "B302", "B304", "B305", "B306", "B307", "B308", "B310", "B311", "B312", "B314", "B317",
              "B318", "B319", "B321", "B323", "B324", "B501", "B502", "B504", "B505", "B506", "B507", "B601",
              "B602", "B604", "B605", "B606", "B607", "B608", "B609", "B610", "B611", "B612", "B614", "B615",
              "B701", "B702", "B703", "B704", "JS001", "JS004", "JS007", "JS008", "JS013"}
    assert wanted <= ids, sorted(wanted - ids)
    assert sum(1 for c in cases if not c.expected) >= 35


def test_recall_whole_and_cut_and_no_false_positives(bench: Any) -> None:
    result = bench.run_cases(bench.load_cases(), Policy())
    skipped = [r for r in result["rows"] if r.get("skipped") and not r.get("clean")]
    assert not skipped, skipped  # every label agrees with Bandit's whole-document scan
    assert result["insecure_cases"] >= 95
    assert result["recall_whole"] >= 0.95, [r for r in result["rows"] if not r.get("whole", True)]
    assert result["recall_cut"] >= 0.95, [r for r in result["rows"] if r.get("missed_cuts")]
    assert result["cuts_scored"] >= 300
    assert result["fp_whole"] <= 0.01 and result["fp_cut"] <= 0.01, [r for r in result["rows"] if r.get("clean")]


def test_cut_statements_are_completed_keeping_the_call() -> None:
    assert trim_partial_argument("f(cmd, shell=True, text") == "f(cmd, shell=True,"
    assert trim_partial_argument('f(a, "x,y"') == "f(a,"
    assert trim_partial_argument("g(h(1, 2), k") == "g(h(1, 2),"
    assert trim_partial_argument("x = 1") == "x = 1"
    assert repair("os.system(") == ("os.system(_)", None)
    assert repair('x = "".join(random.choice("ab") for')[1] is None
    fixed, err = repair('with open("/tmp/x") as')
    assert err is None and fixed.startswith('with open("/tmp/x") as _:')
    # A handler cut before its body is not `except: pass`.
    fixed, err = repair("try:\n    f()\nexcept")
    assert err is None and "pass" not in fixed


def _ids(document: str, suggestion: str, line: int | None = None, character: int | None = None) -> dict[str, str]:
    lines = document.split("\n")
    row = len(lines) - 1 if line is None else line
    col = len(lines[row]) if character is None else character
    r = screen_suggestion(document, row, col, suggestion)
    return {f.test_id: f.action for f in r.findings}


def test_shell_cut_after_keyword_is_still_blocked() -> None:
    doc = "import subprocess\n\n\ndef run(cmd):\n    "
    assert _ids(doc, "out = subprocess.check_output(cmd, shell=True, text").get("B602") == "block"
    assert _ids(doc, "subprocess.call(cmd, shell=True").get("B602") == "block"
    assert _ids(doc, 'subprocess.call("ls " + cmd, shell=True)').get("B602") == "block"


def test_sql_by_formatting_is_annotated_whatever_bandit_confidence() -> None:
    doc = "def count(cursor, table):\n    "
    found = _ids(doc, 'query = "SELECT count(*) FROM {}".format(table)')
    assert found.get("B608") == "annotate"
    assert "B608" in DEFAULT_ANNOTATE_TESTS
    # Bandit rates SQL assigned to a variable LOW confidence: the thresholds alone would let it through.
    old = Policy(annotate_tests=())
    r = screen_suggestion(doc, 1, 4, 'query = "SELECT count(*) FROM {}".format(table)', policy=old)
    assert [f.action for f in r.findings if f.test_id == "B608"] == ["allow"]


def test_requests_timeout_waits_for_an_open_call_but_not_a_closed_one() -> None:
    doc = "import requests\n\n\ndef fetch(url):\n    return "
    assert _ids(doc, "requests.get(url)").get("B113") == "annotate"
    assert "B113" not in _ids(doc, "requests.get(url")  # the timeout may be the next thing typed
    assert "B113" not in _ids(doc, "requests.get(url, timeout")
    # An editor's auto-closed bracket after the cursor closes the call: judged as it stands.
    found = screen_suggestion(doc + ")", 4, len("    return "), "requests.get(url")
    assert "B113" in {f.test_id for f in found.findings}
    jinja = "import jinja2\n\n\ndef env(path):\n    return "
    assert "B701" not in _ids(jinja, "jinja2.Environment(loader=jinja2.FileSystemLoader(path), autoescape")
    assert _ids(jinja, "jinja2.Environment(loader=jinja2.FileSystemLoader(path), autoescape=False").get("B701")


def test_default_policy_ignores_the_safe_subprocess_form_and_its_import() -> None:
    assert _ids("", "import subprocess").get("B404") in (None, "allow")
    doc = "import subprocess\n\n\ndef run(args):\n    "
    assert _ids(doc, "subprocess.run(args, check=True)").get("B603") in (None, "allow")
    # A user can turn them back on.
    strict = Policy(ignore_tests=("B101",))
    r = screen_suggestion(doc, 4, 4, "subprocess.run(args, check=True)", policy=strict)
    assert {f.test_id: f.action for f in r.findings}.get("B603") == "annotate"


@pytest.mark.parametrize(("document", "suggestion", "test_id"), [
    ("def login(user):\n    ", 'password = f"{user}-Winter2024"', "B105"),
    ("class Settings:\n    ", 'api_token: str = f"tok-{1}-live-key"', "B105"),
    ("def make(host, *, ", 'passwd="letmein"):', "B107"),
    ("def make(host, ", 'password=f"pw-{1}-x"):', "B107"),
    ("def open_db(connect):\n    return ", 'connect(host="db", password=f"{1}secret")', "B106"),
    ("CONFIG = {\n    ", '"password": "root123",', "B105"),
])
def test_hard_coded_passwords_as_literals_f_strings_and_defaults(document: str, suggestion: str, test_id: str) -> None:
    lines = document.split("\n")
    r = screen_suggestion(document + ("\n}" if document.startswith("CONFIG") else ""), len(lines) - 1,
                          len(lines[-1]), suggestion)
    hits = [f for f in r.findings if f.test_id == test_id]
    assert hits and hits[0].action == "annotate", r.findings
    assert "Winter2024" not in hits[0].message and "letmein" not in hits[0].message  # never quoted back


@pytest.mark.parametrize("suggestion", [
    'password = get_secret("db")', 'password = f"{prefix}{suffix}"', "password = None", 'password_hash = ""',
    'label = f"password for {user}"',
])
def test_no_password_finding_on_clean_code(suggestion: str) -> None:
    found = _ids("def f(prefix, suffix, user):\n    ", suggestion)
    acted = {k: v for k, v in found.items() if v != "allow" and k in {"B105", "B106", "B107"}}
    # `password_hash = ""` is Bandit's own call (an empty string is its candidate too); ours add nothing.
    if suggestion.startswith("password_hash"):
        acted.pop("B105", None)
    assert not acted, found


def test_flask_debug_on_a_module_level_app_from_inside_a_function() -> None:
    doc = "import flask\n\napp = flask.Flask(__name__)\n\n\ndef main():\n    "
    assert _ids(doc, "app.run(debug=True)").get("B201") == "annotate" or \
        _ids(doc, "app.run(debug=True)").get("B201") == "block"
    doc2 = "from flask import Flask\n\napp = Flask(__name__)\n\nif __name__ == '__main__':\n    "
    assert _ids(doc2, "app.run(debug=True").get("B201") in ("annotate", "block")


def test_js_exec_sees_the_require_above_the_suggestion() -> None:
    doc = 'const { exec } = require("child_process");\n\nfunction run(cmd) {\n  \n}'
    r = screen_suggestion(doc, 3, 2, 'exec("ls " + cmd);', language="javascript")
    assert {f.test_id for f in r.findings} == {"JS007"} and r.verdict == "block"
    # Without child_process anywhere, `exec(` is RegExp.exec or a local helper.
    r2 = screen_suggestion("function run(re, s) {\n  \n}", 1, 2, "exec(s);", language="javascript")
    assert not r2.findings
