"""kill -9 in the middle of indexing (a real subprocess), then a re-run: consistent, nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexing import IndexConfig, RepoIndex
from indexing.chunker import ChunkLimits, chunk_file
from indexing.languages import language_for

ROOT = Path(__file__).resolve().parents[1]
INDEXER = """
import sys, time
from indexing import IndexConfig, RepoIndex
ix = RepoIndex.open(sys.argv[1], IndexConfig(cache_dir=sys.argv[2], batch_chunks=4))
def progress(done, total, path):
    print(f"P {done} {total}", flush=True)
ix.update(progress=progress)
print("DONE", flush=True)
"""


def _workspace(root: Path, n_files: int = 12) -> None:
    for i in range(n_files):
        funcs = "\n\n".join(
            f"def handler_{i}_{j}(request, retries={j}):\n    \"\"\"Handle request {i}.{j}.\"\"\"\n"
            f"    payload = request.get('body', {{}})\n    for attempt in range(retries):\n"
            f"        payload = transform_{j}(payload, attempt)\n    return payload" for j in range(4))
        (root / f"module_{i:02d}.py").write_text(f'"""Module {i}."""\n\n{funcs}\n')


@pytest.mark.slow
def test_kill_9_mid_index_then_consistent_rerun(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    _workspace(ws)
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", INDEXER, str(ws), str(cache)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    killed_at = None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if line.startswith("P "):
            done, total = map(int, line.split()[1:3])
            if done >= 3:  # some batches committed, more to go
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = (done, total)
                break
        assert time.monotonic() < deadline, "the indexer made no progress"
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL and killed_at is not None and killed_at[0] < killed_at[1]

    # Expected content, computed straight from the chunker (no second embedding run needed).
    cfg = IndexConfig(cache_dir=str(cache), batch_chunks=4)
    limits = ChunkLimits(cfg.chunk_max_chars, cfg.chunk_merge_below_chars, cfg.window_lines, cfg.window_overlap)
    expected = {p.name: len(chunk_file(p.read_text(), language_for(p.name), p.name, limits).chunks)
                for p in sorted(ws.iterdir())}

    with RepoIndex.open(ws, cfg) as index:
        partial = index.catalog.counts()
        assert 0 < partial["files"] < len(expected)  # the kill really happened mid-run
        stats = index.update()
        assert stats.files_indexed == len(expected) - partial["files"]
        rows = index.catalog.all_chunks()
        per_file: dict[str, int] = {}
        for r in rows:
            per_file[r.path] = per_file.get(r.path, 0) + 1
        assert per_file == expected
        store_ids = index._get_store().all_ids()
        assert store_ids == {r.id for r in rows}
        assert index._get_store().count() == len(rows) == sum(expected.values())
        assert index.catalog.counts()["journal"] == 0
        again = index.update()
        assert again.files_indexed == 0 and again.chunks_embedded == 0
        assert index.definitions("handler_7_3")[0].path == "module_07.py"
