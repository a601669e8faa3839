"""Two servers on one workspace (two editor windows), issue 18 item 4: both index at once, one writes
while the other searches; every request is answered, one process owns the vector store (the other
reads the catalog and forwards its searches), and the index on disk is consistent afterwards (nothing
lost or duplicated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rawlsp import RawClient
from test_index_crash import _workspace

from indexing import IndexConfig, RepoIndex
from indexing.chunker import ChunkLimits, chunk_file
from indexing.languages import language_for

N_FILES = 8


def _execute(client: RawClient, id_: str, command: str, *args: Any) -> None:
    client.request(id_, "workspace/executeCommand", {"command": command, "arguments": list(args)})


def _hits(resp: dict[str, Any]) -> list[dict[str, Any]]:
    assert "result" in resp, resp
    return list(resp["result"])


@pytest.mark.slow
def test_two_servers_on_one_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    _workspace(ws, N_FILES)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # one cache: both windows share the index
    options = {"index": {"enabled": True}, "memory": {"enabled": True}}
    a, b = RawClient(env=env), RawClient(env=env)
    try:
        a.initialize(options, root=ws)
        b.initialize(options, root=ws)
        # Both windows ask to index at the same moment. One process owns the vector store (ChromaDB's
        # embedded store must not be opened by two); the other answers with a clear error, never a crash.
        _execute(a, "ia", "protege.indexWorkspace")
        _execute(b, "ib", "protege.indexWorkspace")
        ra, rb = a.wait_for("ia", timeout=240), b.wait_for("ib", timeout=240)
        done = [r["result"] for r in (ra, rb) if "result" in r]
        refused = [r["error"]["message"] for r in (ra, rb) if "error" in r]
        assert len(done) == 1 and len(refused) == 1, (ra, rb, a.stderr_tail(60), b.stderr_tail(60))
        assert "another Protege process" in refused[0] and "keeps the index up to date" in refused[0], refused
        assert done[0]["files_indexed"] == N_FILES, done
        writer, reader = (a, b) if "result" in ra else (b, a)
        owns = []
        for client, id_ in ((writer, "st-w"), (reader, "st-r")):
            _execute(client, id_, "protege.status")
            owns.append(client.wait_for(id_, timeout=60)["result"]["index"]["owns_store"])
        assert owns == [True, False], owns

        # The window that does not own the store reads what the other wrote (catalog: BM25, definitions).
        _execute(reader, "s1", "protege.search", {"query": "handler_5_2", "k": 5})
        assert any(h["path"] == "module_05.py" for h in _hits(reader.wait_for("s1", timeout=120)))

        # A search in the reading window is answered by the owner's server (its socket): the same hybrid
        # ranking, vectors included, as in the owning window itself.
        question = "transform the payload of a request on every retry attempt"
        _execute(reader, "q-r", "protege.search", {"query": question, "k": 5})
        _execute(writer, "q-w", "protege.search", {"query": question, "k": 5})
        assert _hits(reader.wait_for("q-r", timeout=120)) == _hits(writer.wait_for("q-w", timeout=120))

        # One writes (a changed file) while the other keeps searching.
        changed = ws / "module_03.py"
        changed.write_text(changed.read_text() + "\n\ndef brand_new_helper(order):\n    return order.total\n")
        _execute(writer, "iu", "protege.indexWorkspace", {"paths": [changed.as_uri()]})
        for i in range(10):
            _execute(reader, f"r{i}", "protege.search", {"query": f"handler_{i % N_FILES}_1", "k": 3})
        for i in range(10):
            assert _hits(reader.wait_for(f"r{i}", timeout=120)), f"search {i} found nothing"
        update = writer.wait_for("iu", timeout=240)
        assert update.get("result", {}).get("files_indexed") == 1, update
        _execute(reader, "s2", "protege.search", {"query": "brand_new_helper", "k": 5})
        assert any(h["path"] == "module_03.py" for h in _hits(reader.wait_for("s2", timeout=60))), \
            "the reading window does not see the other window's update"
        # Both still complete normally.
        for client, id_ in ((a, "ca"), (b, "cb")):
            client.request(id_, "workspace/executeCommand", {"command": "protege.status"})
            assert "result" in client.wait_for(id_, timeout=60)
    finally:
        codes = (a.close(), b.close())
    assert codes == (0, 0), (codes, a.stderr_tail(), b.stderr_tail())

    # On disk: every file once, the vector store and the catalog agree, nothing to redo.
    cfg = IndexConfig(cache_dir=None)
    limits = ChunkLimits(cfg.chunk_max_chars, cfg.chunk_merge_below_chars, cfg.window_lines, cfg.window_overlap)
    expected = {p.name: len(chunk_file(p.read_text(), language_for(p.name), p.name, limits).chunks)
                for p in sorted(ws.iterdir())}
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    with RepoIndex.open(ws, cfg) as index:
        rows = index.catalog.all_chunks()
        per_file: dict[str, int] = {}
        for r in rows:
            per_file[r.path] = per_file.get(r.path, 0) + 1
        assert per_file == expected
        ids, stored = {r.id for r in rows}, index._get_store().all_ids()
        assert ids <= stored, "chunks without vectors"
        # Vectors of replaced chunks may wait in the journal for a batched delete; nothing else is extra.
        assert stored - ids <= set(index.catalog.journal_orphans()), "unaccounted vectors"
        index._updater.reconcile()
        assert index._get_store().all_ids() == ids and index.catalog.counts()["journal"] == 0
        again = index.update()
        assert again.files_indexed == 0 and again.chunks_embedded == 0
