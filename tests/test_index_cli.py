"""`protege index PATH` and `protege search QUERY` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPO = Path(__file__).parent / "fixtures" / "index" / "repo"


def protege(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_index_then_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(REPO, ws)
    (ws / "bad.py").write_bytes(b"x = '\xff\xfe'\n")
    cache = str(tmp_path / "cache")
    done = protege("index", str(ws), "--cache-dir", cache)
    assert done.returncode == 0, done.stderr
    assert "indexed 6 files" in done.stdout and "skipped bad.py: invalid UTF-8" in done.stdout
    assert "indexing" in done.stderr and "7/7" in done.stderr  # the tqdm bar, on stderr

    found = protege("search", "compute_tax", "--workspace", str(ws), "--cache-dir", cache, "-k", "3")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.strip().splitlines()
    assert lines[0].startswith("shop/pricing.py:") and "compute_tax" in lines[0]
    assert len(lines) <= 3

    # JSON output, in-process (the same entry point; spares a third model load in a subprocess).
    from server.cli import main

    assert main(["search", "fetch the orders of a user", "--workspace", str(ws), "--cache-dir", cache, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["path"] == "web/api.js" and {"start_line", "end_line", "symbol", "score", "text"} <= set(first)

    again = protege("index", str(ws), "--cache-dir", cache, "--no-progress", "--json")
    stats = json.loads(again.stdout)["stats"]
    assert stats["files_indexed"] == 0 and stats["chunks_embedded"] == 0 and stats["files_unchanged"] == 6


def test_clear_errors(tmp_path: Path) -> None:
    missing = protege("index", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = protege("search", "x", "--workspace", str(tmp_path / "empty"), "--cache-dir", str(tmp_path / "c"))
    assert empty.returncode == 1 and "run `protege index" in empty.stderr
