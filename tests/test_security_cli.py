"""``protege screen`` run as a real subprocess: one JSON object on stdout, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _screen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "screen", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd or Path(__file__).resolve().parents[1])


def test_blocked_suggestion_exits_1_with_findings(tmp_path: Path) -> None:
    doc = tmp_path / "tool.py"
    doc.write_text("import subprocess\n\ndef run(cmd):\n    return \n")
    suggestion = tmp_path / "s.txt"
    suggestion.write_text("subprocess.check_output(cmd, shell=True)")
    proc = _screen(str(doc), "--position", "3:11", "--suggestion-file", str(suggestion))
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "block"
    finding = out["findings"][0]
    assert {k: finding[k] for k in ("test_id", "severity", "confidence", "line")} == {
        "test_id": "B602", "severity": "HIGH", "confidence": "HIGH", "line": 3}
    assert finding["message"] and finding["advice"]["safe_idiom"].startswith("subprocess.run([")


def test_whole_file_of_the_corpus(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flagged = _screen(str(shared_data / "bandit-examples" / "yaml_load.py"))
    assert flagged.returncode == 0, flagged.stderr  # B506 is MEDIUM severity: annotate, not block
    out = json.loads(flagged.stdout)
    assert out["verdict"] == "annotate" and {f["test_id"] for f in out["findings"]} == {"B506"}
    # The same entry point in-process for the other verdicts (each subprocess costs seconds).
    from server.cli import main

    assert main(["screen", str(shared_data / "bandit-examples" / "okay.py")]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "allow"
    assert main(["screen", str(shared_data / "bandit-examples" / "nonsense.py")]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "unscreened"


def test_javascript_by_extension_and_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    js = tmp_path / "app.js"
    js.write_text("el.innerHTML = '<b>' + name;\n")
    assert main(["screen", str(js)]) == 0
    assert json.loads(capsys.readouterr().out)["findings"][0]["test_id"] == "JS004"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"blockSeverity": "MEDIUM"}))
    assert main(["screen", str(js), "--policy", str(policy)]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "block"


def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "a.py"
    doc.write_text("x = 1\n")
    s = tmp_path / "s.txt"
    s.write_text("y")
    proc = _screen(str(tmp_path / "missing.py"))
    assert proc.returncode == 2 and proc.stdout == "" and "does not exist" in proc.stderr
    assert proc.stderr.count("\n") == 1
    # The other argument errors through the same entry point in-process (each subprocess costs seconds).
    from server.cli import main

    cases = [
        ((str(doc), "--position", "9:0", "--suggestion-file", str(s)), "line 9 is outside the document"),
        ((str(doc), "--position", "x", "--suggestion-file", str(s)), "LINE:COL"),
        ((str(doc), "--position", "0:0"), "go together"),
        ((str(doc), "--policy", str(s)), "not valid JSON"),
    ]
    for args, message in cases:
        assert main(["screen", *args]) == 2, args
        captured = capsys.readouterr()
        assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1, captured.err
