"""The screen against Bandit's own labelled examples: whole-file truth, fragments, unflagged lines, clean files."""

from __future__ import annotations

import collections
import csv
import re
import zlib
from pathlib import Path

import pytest
from bandit.core import config as b_config
from bandit.core import manager as b_manager

from security.scenarios import Scenario, corpus_files, scenarios_for_source, whole_file_issues
from security.screen import screen_suggestion, screen_text

_COUNTS = re.compile(r"sev L/M/H=(\d+)/(\d+)/(\d+) \(U=0\); conf L/M/H=(\d+)/(\d+)/(\d+) total=(\d+)")
# Scenario sample kept small so the file stays fast; bench/bench_screen.py sweeps every scenario.
_SAMPLE_EVERY = 5


# Bandit itself needs ~40 s on long_set.py (a 7,000-element literal): the benchmark covers it.
_SLOW = ("long_set.py",)


def _corpus(shared_data: Path) -> Path:
    return shared_data / "bandit-examples"


def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _bandit_manager(path: Path) -> b_manager.BanditManager:
    mgr = b_manager.BanditManager(b_config.BanditConfig(), "file")
    mgr.discover_files([str(path)])
    mgr.run_tests()
    return mgr


def _sampled(shared_data: Path) -> list[Scenario]:
    out = []
    for path in corpus_files(_corpus(shared_data)):
        if path.name in _SLOW:
            continue
        for sc in scenarios_for_source(path.name, _source(path)):
            key = f"{sc.file}:{sc.line}:{sc.character}:{sc.kind}".encode()
            if zlib.crc32(key) % _SAMPLE_EVERY == 0:
                out.append(sc)
    return out


@pytest.fixture(scope="module")
def sampled(shared_data: Path) -> list[Scenario]:
    return _sampled(shared_data)


def test_expected_counts_are_what_bandit_finds(shared_data: Path) -> None:
    """The corpus labels hold for this Bandit: rows needing no option or test-set change match a real scan."""
    root = _corpus(shared_data)
    checked = 0
    with open(root / "EXPECTED_COUNTS.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # A test checking one example against several expectations changes Bandit's settings in between.
    variants: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for row in rows:
        variants[(row["test"], row["example"])].add(row["expected"])
    for row in rows:
        m = _COUNTS.fullmatch(row["expected"] or "")
        if (row["call"] != "check_example" or row["kwargs"] or row.get("condition") or m is None
                or len(variants[(row["test"], row["example"])]) > 1):
            continue
        issues = _bandit_manager(root / row["example"]).get_issue_list()
        sev = collections.Counter(i.severity for i in issues)
        conf = collections.Counter(i.confidence for i in issues)
        got = (sev["LOW"], sev["MEDIUM"], sev["HIGH"], conf["LOW"], conf["MEDIUM"], conf["HIGH"], len(issues))
        assert got == tuple(int(g) for g in m.groups()), row["example"]
        checked += 1
    assert checked > 40


def test_in_process_checks_equal_bandit_manager(shared_data: Path) -> None:
    """Our in-process driver of Bandit's checks reports exactly what Bandit's own manager reports."""
    for path in corpus_files(_corpus(shared_data)):
        if path.name in _SLOW:
            continue
        mgr = _bandit_manager(path)
        if mgr.skipped:  # does not parse: Bandit skips it, the screen says unscreened
            assert screen_text(_source(path)).verdict == "unscreened", path.name
            continue
        ours = collections.Counter((i.test_id, i.reported_line) for i in whole_file_issues(_source(path)))
        theirs = collections.Counter((i.test_id, i.lineno) for i in mgr.get_issue_list())
        assert ours == theirs, path.name


def test_flagged_lines_as_fragments_are_flagged(sampled: list[Scenario]) -> None:
    """Recall on completions of the statements Bandit flags in whole-file scans, with the right test ids."""
    flagged = [sc for sc in sampled if sc.expected]
    assert len(flagged) > 300 and {sc.kind for sc in flagged} == {"line", "mid-line", "cut", "cut-autoclosed"}
    expected = found = 0
    misses = []
    for sc in flagged:
        result = screen_suggestion(sc.document, sc.line, sc.character, sc.suggestion, "python")
        got = {f.test_id for f in result.findings if f.source == "bandit"}
        expected += len(sc.expected)
        found += len(sc.expected & got)
        if not sc.expected <= got:
            misses.append((sc.file, sc.kind, sc.line, sorted(sc.expected - got), result.reason))
        if sc.kind == "line":
            assert result.verdict != "unscreened", (sc.file, sc.line, result.reason)
    assert found / expected >= 0.95, misses[:10]


def test_unflagged_lines_pass(sampled: list[Scenario]) -> None:
    """Completions of statements Bandit does not flag get no Bandit finding (false positives <= 1%)."""
    clean = [sc for sc in sampled if not sc.expected and not sc.waived]
    assert len(clean) > 300
    false_positives = []
    for sc in clean:
        result = screen_suggestion(sc.document, sc.line, sc.character, sc.suggestion, "python")
        if any(f.source == "bandit" for f in result.findings):
            false_positives.append((sc.file, sc.kind, sc.line, [f.test_id for f in result.findings]))
    assert len(false_positives) <= 0.01 * len(clean), false_positives[:10]


def test_clean_files_are_allowed(shared_data: Path) -> None:
    """The README's clean negatives screen as Bandit scans them: no findings, verdict allow."""
    root = _corpus(shared_data)
    for name in ("okay.py", "pycryptodome.py", "trojansource_latin1.py", "init-py-test/subdirectory-okay.py"):
        path = root / name
        assert not _bandit_manager(path).get_issue_list(), name
        result = screen_text(_source(path))
        assert result.verdict == "allow" and result.findings == [], (name, result.to_dict())


def test_nonsense_is_unscreened_not_safe(shared_data: Path) -> None:
    for name in ("nonsense.py", "nonsense2.py"):
        result = screen_text(_source(_corpus(shared_data) / name))
        assert result.verdict == "unscreened"
        assert result.reason and "does not parse" in result.reason


def test_whole_file_screen_matches_bandit(shared_data: Path) -> None:
    """screen_text on a flagged file reports Bandit's ids; the default policy blocks HIGH/HIGH shell injection."""
    path = _corpus(shared_data) / "subprocess_shell.py"
    result = screen_text(_source(path))
    theirs = {i.test_id for i in _bandit_manager(path).get_issue_list()}
    assert {f.test_id for f in result.findings if f.source == "bandit"} == theirs
    assert result.verdict == "block"
    assert any(f.test_id == "B602" and f.action == "block" for f in result.findings)


def test_skipping_inert_node_types_changes_no_finding(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The screen visits only node types Bandit has tests or bookkeeping for; every finding is unchanged."""
    import ast as _ast

    from security import bandit_checks

    def findings(visit_all: bool) -> list[str]:
        monkeypatch.setattr(bandit_checks, "_VISIT_ALL", visit_all)
        out = []
        for path in sorted(_corpus(shared_data).rglob("*.py")):
            if path.name in _SLOW:
                continue
            source = _source(path)
            try:
                _ast.parse(source)
            except SyntaxError:
                continue
            for issue in bandit_checks.run_bandit(source):
                # Some messages print an AST node's repr: its address differs between runs.
                out.append(re.sub(r"0x[0-9a-f]+", "", f"{path.name} {issue}"))
        return out

    everything, active = findings(True), findings(False)
    assert len(everything) > 100 and active == everything
