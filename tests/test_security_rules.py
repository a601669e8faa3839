"""Secrets, JS/TS rules, policy, advice and the screen's contract (only inserted text counts)."""

from __future__ import annotations

import pytest

from security.advice import advice_for
from security.js_rules import RULES
from security.policy import Policy
from security.screen import screen_suggestion, screen_text, screened_languages

# --- secrets -------------------------------------------------------------------------------------

# Provider-format examples built from parts so this file holds no credential-shaped literal.
_AWS = "AKIA" + "IOSFODNN7" + "EXAMPLE"
_GITHUB = "ghp_" + "abcdefghijklmnopqrstuvwxyz0123456789"
_PRIVATE_KEY = "-----BEGIN " + "RSA PRIVATE KEY-----"


@pytest.mark.parametrize("line", [f'aws_key = "{_AWS}"', f'token = "{_GITHUB}"', f'key = """{_PRIVATE_KEY}'])
def test_provider_tokens_block(line: str) -> None:
    result = screen_text(line + ('"""' if '"""' in line else ""), "python")
    secrets = [f for f in result.findings if f.source == "secrets"]
    assert secrets and secrets[0].test_id == "SECRET" and secrets[0].cwe == 798
    assert result.verdict == "block"
    # The value itself never appears in what the screen reports.
    assert _AWS not in str(result.to_dict()) and _GITHUB not in str(result.to_dict())


def test_keyword_secret_annotates_and_references_pass() -> None:
    result = screen_text('db_password = "Sup3rS3cr3tValue!"\n', "javascript")
    assert [(f.test_id, f.action) for f in result.findings] == [("SECRET", "annotate")]
    for clean in ('password = os.environ["DB_PASSWORD"]\n', 'request_id = "123e4567-e89b-12d3-a456-426614174000"\n',
                  "x = compute(a, b)\n"):
        assert not [f for f in screen_text(clean).findings if f.source == "secrets"], clean


def test_secrets_in_the_document_do_not_count() -> None:
    doc = f'KEY = "{_AWS}"\n\ndef f():\n    return \n'
    result = screen_suggestion(doc, 3, 11, "KEY.lower()")
    assert result.verdict == "allow" and result.findings == []


# --- JS/TS rules ---------------------------------------------------------------------------------

_JS_POSITIVE = {
    "JS001": "const v = eval(userInput);",
    "JS002": "const f = new Function('a', body);",
    "JS003": "setTimeout('tick()', 100);",
    "JS004": "el.innerHTML = '<b>' + name + '</b>';",
    "JS005": "document.write(html);",
    "JS006": "<div dangerouslySetInnerHTML={{ __html: html }} />",
    "JS007": "child_process.exec(`ls ${dir}`, cb);",
    "JS008": "spawn(cmd, args, { shell: true });",
    "JS009": "crypto.createHash('md5').update(pw);",
    "JS010": "crypto.createCipheriv('des-ede3', key, iv);",
    "JS011": "crypto.createCipher('aes192', pw);",
    "JS012": "https.request({ host, rejectUnauthorized: false });",
    "JS013": "db.query(\"SELECT * FROM users WHERE id = '\" + id + \"'\");",
    "JS014": "vm.runInNewContext(code, sandbox);",
    "JS015": "serialize.unserialize(payload);",
    "JS016": "const token = Math.random().toString(36);",
    "JS017": "res.cookie('sid', sid, { httpOnly: false });",
    "JS018": "jwt.verify(token, key, { algorithms: ['none'] });",
    "JS019": "window.parent.postMessage(data, '*');",
    "JS020": "this.sanitizer.bypassSecurityTrustHtml(html);",
}
_JS_NEGATIVE = {
    "JS001": "const v = JSON.parse(text); // eval( in a comment",
    "JS003": "setTimeout(() => tick(), 100);",
    "JS004": "el.innerHTML = '<b>static</b>';",
    "JS007": "const m = /a+/.exec(line);",
    "JS008": "spawn('ls', ['-l']);",
    "JS009": "crypto.createHash('sha256');",
    "JS012": "https.request({ host, rejectUnauthorized: true });",
    "JS013": "db.query('SELECT * FROM users WHERE id = $1', [id]);",
    "JS016": "const n = crypto.randomInt(10);",
}


def test_every_rule_has_a_positive_example_and_advice() -> None:
    assert {r.test_id for r in RULES} == set(_JS_POSITIVE)
    for rule in RULES:
        advice = advice_for(rule.test_id)
        assert advice is not None and advice.cwe == rule.cwe, rule.test_id


@pytest.mark.parametrize("test_id", sorted(_JS_POSITIVE))
@pytest.mark.parametrize("language", ["javascript", "typescriptreact"])
def test_js_rule_flags_its_pattern(test_id: str, language: str) -> None:
    result = screen_text(_JS_POSITIVE[test_id], language)
    assert test_id in {f.test_id for f in result.findings if f.source == "js-rules"}
    assert result.verdict in ("annotate", "block")


@pytest.mark.parametrize("test_id", sorted(_JS_NEGATIVE))
def test_js_rule_passes_the_safe_idiom(test_id: str) -> None:
    result = screen_text(_JS_NEGATIVE[test_id], "typescript")
    assert test_id not in {f.test_id for f in result.findings}


def test_js_exec_from_a_literal_is_low_and_from_data_is_high() -> None:
    low = screen_text("const { exec } = require('child_process');\nexec('ls -l', cb);", "javascript")
    high = screen_text("const { exec } = require('child_process');\nexec('ls ' + dir, cb);", "javascript")
    assert [(f.test_id, f.severity) for f in low.findings] == [("JS007", "LOW")]
    assert [(f.test_id, f.severity, f.action) for f in high.findings] == [("JS007", "HIGH", "block")]


def test_js_finding_on_the_document_line_but_not_the_suggestion_does_not_count() -> None:
    doc = "const v = eval(x); const y = \n"
    assert screen_suggestion(doc, 0, 29, "1;", "javascript").findings == []
    hit = screen_suggestion(doc, 0, 29, "eval(z);", "javascript")
    assert [(f.test_id, f.line, f.col) for f in hit.findings] == [("JS001", 0, 29)]


# --- the screen's contract ------------------------------------------------------------------------

def test_only_inserted_text_counts_in_python() -> None:
    doc = "import subprocess\n\ndef f(cmd):\n    subprocess.call(cmd, shell=True)\n    return \n"
    assert screen_suggestion(doc, 4, 11, "cmd.strip()").verdict == "allow"
    bad = screen_suggestion(doc, 4, 11, "subprocess.check_output(cmd, shell=True)")
    assert [(f.test_id, f.line, f.col, f.action) for f in bad.findings] == [("B602", 4, 11, "block")]


def test_aliases_from_the_file_imports_are_known() -> None:
    doc = "import subprocess as sp\n" + "x = 1\n" * 50 + "def f(cmd):\n    \n"
    result = screen_suggestion(doc, 52, 4, "sp.Popen(cmd, shell=True)")
    assert "B602" in {f.test_id for f in result.findings}


def test_nosec_written_by_a_suggestion_is_ignored_but_the_files_counts() -> None:
    doc = "import subprocess\ndef f(cmd):\n    \n"
    waived_by_model = screen_suggestion(doc, 2, 4, "subprocess.call(cmd, shell=True)  # nosec")
    assert waived_by_model.verdict == "block"
    doc_waiver = "import subprocess\ndef f(cmd):\n      # nosec\n"
    assert screen_suggestion(doc_waiver, 2, 4, "subprocess.call(cmd, shell=True)").verdict == "allow"
    trusting = Policy(honor_nosec_in_suggestion=True)
    assert screen_suggestion(doc, 2, 4, "subprocess.call(cmd, shell=True)  # nosec", policy=trusting).verdict == "allow"


def test_unparseable_is_unscreened_never_allowed() -> None:
    result = screen_suggestion("def f():\n    \n", 1, 4, "return )(")
    assert result.verdict == "unscreened" and "does not parse" in (result.reason or "")


def test_unscreened_language_says_so_and_still_blocks_secrets() -> None:
    plain = screen_text("fmt.Println(os.Args)", "go")
    assert plain.verdict == "unscreened" and "go" in (plain.reason or "")
    leaked = screen_text(f'key := "{_AWS}"', "go")
    assert leaked.verdict == "block"
    assert set(screened_languages()) == {"python", "javascript", "typescript", "javascriptreact", "typescriptreact"}


def test_bad_positions_raise_a_clear_error() -> None:
    with pytest.raises(ValueError, match="outside the document"):
        screen_suggestion("a\nb\n", 5, 0, "x")
    with pytest.raises(ValueError, match="character 9 is outside line 0"):
        screen_suggestion("abc\n", 0, 9, "x")


def test_empty_suggestion_is_allowed() -> None:
    assert screen_suggestion("x = 1\n", 0, 5, "  ").verdict == "allow"


# --- policy and advice -----------------------------------------------------------------------------

def test_policy_defaults_and_overrides() -> None:
    p = Policy()
    assert p.action_for("B602", "HIGH", "HIGH") == "block"
    assert p.action_for("B602", "LOW", "HIGH") == "annotate"
    # Injection-class and other listed tests are annotated whatever Bandit's confidence; others need MEDIUM.
    assert p.action_for("B113", "MEDIUM", "LOW") == "annotate"
    assert p.action_for("B608", "MEDIUM", "LOW") == "annotate"
    assert p.action_for("B311", "LOW", "LOW") == "allow"
    assert p.action_for("B101", "LOW", "HIGH") == "allow"
    assert p.action_for("B404", "LOW", "HIGH") == "allow" and p.action_for("B603", "LOW", "HIGH") == "allow"
    strict = Policy.from_dict({"blockSeverity": "medium", "blockTests": ["B311"], "ignoreTests": []})
    assert strict.action_for("B506", "MEDIUM", "HIGH") == "block"
    assert strict.action_for("B311", "LOW", "HIGH") == "block"
    assert strict.action_for("B101", "LOW", "HIGH") == "annotate"
    assert Policy.from_dict({"annotate_confidence": "LOW"}).action_for("B311", "MEDIUM", "LOW") == "annotate"
    assert Policy.from_dict(Policy().to_dict()) == Policy()


@pytest.mark.parametrize("bad, message", [
    ({"blockSeverity": "CRITICAL"}, "block_severity must be one of LOW, MEDIUM, HIGH"),
    ({"blockTests": [1]}, "block_tests must be a list of test ids"),
    ({"colour": "red"}, "unknown security policy option 'colour'"),
    ({"checkSecrets": "yes"}, "check_secrets must be true or false"),
])
def test_policy_rejects_bad_values_clearly(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy.from_dict(bad)


def test_advice_for_bandit_tests() -> None:
    shell = advice_for("b602")
    assert shell is not None and shell.cwe == 78 and "shell=True" not in (shell.safe_idiom or "shell=True")
    yaml_advice = advice_for("B506")
    assert yaml_advice is not None and "safe_load" in (yaml_advice.safe_idiom or "")
    sql = advice_for("B608")
    assert sql is not None and "%s" in (sql.safe_idiom or "")
    blacklisted = advice_for("B403")  # no hand-written entry: Bandit's own registry names it
    assert blacklisted is not None and blacklisted.cwe == 502
    assert advice_for("B999") is None


def test_index_chunks_and_teacher_outputs() -> None:
    """An indented chunk (methods cut from a class) is screened as is; a truncated generation only with repair."""
    chunk = "    def f(self, x):\n        os.system(x)\n\n    def g(self):\n        return eval(self.s)\n"
    result = screen_text(chunk)
    assert [(f.test_id, f.line, f.action) for f in result.findings] == [("B605", 1, "block"), ("B307", 4, "annotate")]
    truncated = "import yaml\n\ndef load(path):\n    return yaml.load(open(path"
    assert screen_text(truncated).verdict == "unscreened"
    repaired = screen_text(truncated, repair=True)
    assert [f.test_id for f in repaired.findings] == ["B506"] and repaired.scope == "scope"
