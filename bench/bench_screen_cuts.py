"""Benchmark: the suggestion screen on labelled insecure and clean completions, whole and cut at every token.

Cases are ``bench/data/insecure_completions.txt`` (written for this project: every Bandit test that can
fire on a completion, plus JS/TS rules, and clean look-alikes). For each insecure case the label is what
Bandit reports on the suggestion's lines when it scans the whole merged document (JS/TS: our rules on the
whole document); the case's header must agree. Each suggestion is screened whole, then cut at every
token of its flagged line: cuts at or after the case's trigger (where the insecure construct becomes
decidable) are scored for recall; earlier cuts are reported apart. False positives are counted on the
clean cases and on every line of real stdlib modules that Bandit does not flag (whole and cut), where
an "annotate" or "block" on a clean suggestion is a false positive. Latency is per suggestion with each
case appended to a 2,000-line real module.

    python bench/bench_screen_cuts.py [--real-lines 600] [--out bench/results/screen_cuts.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import re
import statistics
import sys
import sysconfig
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from security.bandit_checks import parse_nosec, run_bandit  # noqa: E402
from security.js_rules import scan as js_scan  # noqa: E402
from security.policy import Policy  # noqa: E402
from security.screen import screen_suggestion  # noqa: E402

CASES = ROOT / "bench" / "data" / "insecure_completions.txt"
_HEADER = re.compile(r"^### (?P<ids>[A-Z0-9! ]+?)(?:\s*\|\s*(?P<trigger>.+))?$")
REAL_MODULES = ("textwrap.py", "json/decoder.py", "dataclasses.py", "argparse.py", "shutil.py", "csv.py",
                "string.py", "calendar.py", "logging/__init__.py")


@dataclass
class Case:
    index: int
    expected: frozenset[str]  # empty for a clean case
    trigger: str | None
    document: str  # without the suggestion
    line: int
    character: int
    suggestion: str
    language: str
    beyond_bandit: bool = False  # an insecure pattern Bandit itself misses (ids written with "!")

    @property
    def merged(self) -> str:
        lines = self.document.split("\n")
        row = lines[self.line]
        lines[self.line] = row[:self.character] + self.suggestion + row[self.character:]
        return "\n".join(lines)


def load_cases(path: Path = CASES) -> list[Case]:
    cases: list[Case] = []
    blocks = re.split(r"(?m)^(?=### )", path.read_text(encoding="utf-8"))
    for block in blocks:
        if not block.startswith("### "):
            continue
        header, _, body = block.partition("\n")
        m = _HEADER.match(header.strip())
        if not m:
            raise ValueError(f"bad case header {header!r}")
        raw = m.group("ids").split()
        beyond = any(i.endswith("!") for i in raw)
        ids = [i.rstrip("!") for i in raw]
        body = body.rstrip("\n") + "\n"
        start, end = body.index("«"), body.index("»")
        suggestion = body[start + 1:end]
        document = body[:start] + body[end + 1:]
        line = body[:start].count("\n")
        character = start - (body.rfind("\n", 0, start) + 1)
        is_js = ids[0].startswith("JS") or "function " in body
        cases.append(Case(len(cases), frozenset() if ids == ["CLEAN"] else frozenset(ids), m.group("trigger"),
                          document, line, character, suggestion, "javascript" if is_js else "python", beyond))
    return cases


def whole_document_ids(case: Case) -> set[str]:
    """What Bandit (JS: our rules) reports on the suggestion's lines of the whole merged document."""
    merged = case.merged
    first = case.line
    last = case.line + case.suggestion.count("\n")
    if case.language != "python":
        lines = merged.split("\n")
        starts = [0]
        for t in lines:
            starts.append(starts[-1] + len(t) + 1)
        return {h.rule.test_id for h in js_scan(merged)
                if first <= max(i for i in range(len(lines)) if starts[i] <= h.start) <= last}
    issues = run_bandit(merged, parse_nosec(merged.split("\n")))
    return {i.test_id for i in issues if first <= i.line - 1 <= last or (i.line - 1 <= first <= i.end_line - 1)}


def token_ends(text: str, language: str) -> list[int]:
    """Offsets in ``text`` where a token ends (every place a streamed suggestion could stop)."""
    ends: set[int] = set()
    if language == "python":
        try:
            starts = [0]
            for ln in text.split("\n"):
                starts.append(starts[-1] + len(ln) + 1)
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type in (tokenize.ENDMARKER, tokenize.NEWLINE, tokenize.NL, tokenize.DEDENT,
                                tokenize.INDENT):
                    continue
                r, c = tok.end
                ends.add(starts[r - 1] + c)
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass
    if not ends:
        ends = {m.end() for m in re.finditer(r"\w+|[^\w\s]", text)}
    return sorted(e for e in ends if 0 < e < len(text))


def _flagged(result: Any, expected: frozenset[str]) -> bool:
    return any(f.action != "allow" and f.test_id in expected for f in result.findings)


def _acted(result: Any) -> bool:
    return any(f.action != "allow" for f in result.findings)


def run_cases(cases: list[Case], policy: Policy) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    recall_whole = recall_cut = cuts_scored = early = early_caught = 0
    fp_whole = fp_cut = clean_cuts = 0
    insecure = clean = beyond = ignored = 0
    for case in cases:
        bandit_ids = whole_document_ids(case)
        ends = token_ends(case.suggestion, case.language)
        if case.expected:
            missing = case.expected - bandit_ids
            if missing and not case.beyond_bandit:
                rows.append({"case": case.index, "expected": sorted(case.expected), "bandit": sorted(bandit_ids),
                             "skipped": "the whole-document scan does not report the expected ids"})
                continue
            if case.expected <= set(policy.ignore_tests):
                ignored += 1
                continue  # the default policy allows these by design (docs/SECURITY_POLICY.md)
            insecure += 1
            beyond += case.beyond_bandit
            whole = screen_suggestion(case.document, case.line, case.character, case.suggestion, case.language,
                                      policy)
            ok = _flagged(whole, case.expected)
            recall_whole += ok
            trig = case.trigger.strip() if case.trigger else "("
            at = case.suggestion.find(trig)
            decidable_from = at + len(trig) if at >= 0 else len(case.suggestion)
            missed_cuts = []
            for e in ends:
                r = screen_suggestion(case.document, case.line, case.character, case.suggestion[:e],
                                      case.language, policy)
                hit = _flagged(r, case.expected)
                if e >= decidable_from:
                    cuts_scored += 1
                    recall_cut += hit
                    if not hit:
                        missed_cuts.append(case.suggestion[:e])
                else:
                    early += 1
                    early_caught += hit
            rows.append({"case": case.index, "expected": sorted(case.expected), "whole": ok,
                         "beyond_bandit": case.beyond_bandit,
                         "verdict": whole.verdict, "found": sorted({f"{f.test_id}:{f.action}" for f in whole.findings}),
                         "missed_cuts": missed_cuts[:4]})
        else:
            if bandit_ids - set(policy.ignore_tests):
                rows.append({"case": case.index, "clean": True, "bandit": sorted(bandit_ids),
                             "skipped": "Bandit flags this clean-looking case"})
                continue
            clean += 1
            whole = screen_suggestion(case.document, case.line, case.character, case.suggestion, case.language,
                                      policy)
            bad = _acted(whole)
            fp_whole += bad
            bad_cuts = []
            for e in ends:
                r = screen_suggestion(case.document, case.line, case.character, case.suggestion[:e],
                                      case.language, policy)
                clean_cuts += 1
                if _acted(r):
                    fp_cut += 1
                    bad_cuts.append(case.suggestion[:e])
            if bad or bad_cuts:
                rows.append({"case": case.index, "clean": True, "whole_flagged": bad,
                             "found": sorted({f"{f.test_id}:{f.action}" for f in whole.findings}),
                             "flagged_cuts": bad_cuts[:3]})
    return {
        "insecure_cases": insecure, "beyond_bandit_cases": beyond, "clean_cases": clean,
        "ignored_by_policy": ignored,
        "recall_whole": recall_whole / max(1, insecure),
        "recall_cut": recall_cut / max(1, cuts_scored), "cuts_scored": cuts_scored,
        "early_cuts": early, "early_cuts_caught": early_caught / max(1, early),
        "fp_whole": fp_whole / max(1, clean), "fp_cut": fp_cut / max(1, clean_cuts), "clean_cuts": clean_cuts,
        "rows": rows,
    }


def real_clean_lines(n: int, seed: int = 0) -> list[Case]:
    """Lines of real stdlib modules that Bandit does not flag in a whole-file scan, as completions."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out: list[Case] = []
    for rel in REAL_MODULES:
        text = (stdlib / rel).read_text(encoding="utf-8")
        lines = text.split("\n")
        flagged = {ln for i in run_bandit(text, parse_nosec(lines)) for ln in range(i.line - 1, i.end_line)}
        for k, row in enumerate(lines):
            body = row.strip()
            if not body or body.startswith("#") or k in flagged or len(body) < 8:
                continue
            indent = len(row) - len(row.lstrip())
            doc_lines = lines.copy()
            doc_lines[k] = row[:indent]
            out.append(Case(-1, frozenset(), None, "\n".join(doc_lines), k, indent, row[indent:], "python"))
    random.Random(seed).shuffle(out)
    return out[:n]


def latency(cases: list[Case], policy: Policy, host_lines: int = 2000) -> dict[str, float]:
    host = (Path(sysconfig.get_paths()["stdlib"]) / "subprocess.py").read_text(encoding="utf-8").split("\n")
    host = host[:host_lines]
    times: list[float] = []
    for case in cases:
        if case.language != "python":
            continue
        doc = "\n".join(host) + "\n\n\n" + case.document
        line = case.line + len(host) + 2  # host lines, two blank ones, then the case
        for _ in range(3):
            t = time.perf_counter()
            screen_suggestion(doc, line, case.character, case.suggestion, case.language, policy)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"samples": len(times), "host_lines": len(host), "p50_ms": statistics.median(times),
            "p95_ms": times[int(0.95 * (len(times) - 1))], "max_ms": times[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real-lines", type=int, default=600, help="clean real stdlib lines scored for false positives")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "screen_cuts.json"))
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args()
    policy = Policy()
    cases = load_cases()
    labelled = run_cases(cases, policy)
    real = run_cases(real_clean_lines(args.real_lines), policy) if args.real_lines else {}
    result: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version(),
                              "labelled": labelled}
    if real:
        result["real_clean"] = {k: real[k] for k in ("clean_cases", "fp_whole", "fp_cut", "clean_cuts")}
        result["real_clean"]["flagged"] = real["rows"][:10]
    if not args.no_latency:
        result["latency"] = latency(cases, policy)
    lab = labelled
    print(f"insecure cases {lab['insecure_cases']} (Bandit agrees, or {lab['beyond_bandit_cases']} Bandit misses), "
          f"clean {lab['clean_cases']}")
    print(f"recall whole {lab['recall_whole']:.3f}   cut (decidable, {lab['cuts_scored']} cuts) "
          f"{lab['recall_cut']:.3f}   early cuts caught {lab['early_cuts_caught']:.3f} of {lab['early_cuts']}")
    print(f"false positives: labelled clean whole {lab['fp_whole']:.3f}, cuts {lab['fp_cut']:.3f} "
          f"({lab['clean_cuts']})")
    if real:
        print(f"false positives: real lines whole {real['fp_whole']:.3f} ({real['clean_cases']}), "
              f"cuts {real['fp_cut']:.4f} ({real['clean_cuts']})")
    if "latency" in result:
        lat = result["latency"]
        print(f"latency in a {lat['host_lines']}-line file: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms")
    for row in lab["rows"]:
        if row.get("skipped") or not row.get("whole", True) or row.get("missed_cuts") or row.get("clean"):
            print("  ", json.dumps(row)[:300])
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
