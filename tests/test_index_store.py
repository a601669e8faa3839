"""The index end to end with real tree-sitter, real MiniLM embeddings and a real embedded ChromaDB:
secrets never stored, incremental updates, the writer lock, hybrid search, completion context, repo map."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from indexing import IndexConfig, IndexLockedError, RepoIndex

REPO = Path(__file__).parent / "fixtures" / "index" / "repo"
ROOT = Path(__file__).resolve().parents[1]
AWS_KEY = "AKIAZXCVBNMASDFGHJKL"
GH_TOKEN = "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa99"
DOTENV_VALUE = "dotenv-only-value-7f3a9c"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7fakefake"


def make_workspace(dest: Path) -> Path:
    shutil.copytree(REPO, dest)
    (dest / "dist").mkdir()
    (dest / "dist" / "bundle.py").write_text("def built():\n    return 1\n")  # git-ignored
    (dest / ".env").write_text(f"DATABASE_PASSWORD={DOTENV_VALUE}\nAWS_ACCESS_KEY_ID={AWS_KEY}\n")
    (dest / "server.pem").write_text(f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n")
    (dest / "shop" / "settings.py").write_text(
        f'"""Deployment settings."""\nAWS_ACCESS_KEY_ID = "{AWS_KEY}"\nGITHUB_TOKEN = "{GH_TOKEN}"\n'
        'REGION = "eu"\n')
    (dest / "blob.bin.txt").write_bytes(b"\x00\x01\x02binary")
    (dest / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (dest / "shop" / "shell.py").write_text(
        "import subprocess\n\n\ndef run_report(command):\n    return subprocess.call(command, shell=True)\n")
    return dest


def config(tmp: Path, **kw: object) -> IndexConfig:
    return IndexConfig(cache_dir=str(tmp / "cache"), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[RepoIndex, object]:
    tmp = tmp_path_factory.mktemp("indexed")
    ws = make_workspace(tmp / "ws")
    index = RepoIndex.open(ws, config(tmp))
    stats = index.update()
    yield index, stats
    index.close()


def test_secrets_never_reach_chroma(indexed: tuple[RepoIndex, object]) -> None:
    index, stats = indexed
    store = index._get_store()
    stored = store.documents()
    assert store.count() == index.status()["chunks"] > 0
    blob = "\n".join(stored) + "\n".join(r.text for r in index.catalog.all_chunks())
    fts = "\n".join(r[0] for r in index.catalog.db.execute("SELECT terms FROM chunks_fts"))
    for secret in (AWS_KEY, GH_TOKEN, DOTENV_VALUE, PEM_BODY):
        assert secret not in blob
        assert secret.lower() not in fts
    files = set(index.catalog.files())
    assert ".env" not in files and "server.pem" not in files and "dist/bundle.py" not in files
    assert "shop/settings.py" in files  # indexed, with its secrets masked and the chunk flagged
    metas = store.collection.get(where={"path": "shop/settings.py"}, include=["metadatas"])["metadatas"]
    assert metas and all("secret-redacted" in m["security"] for m in metas)
    assert stats.secrets_redacted >= 2
    # The embedded store keeps vectors and metadata; the text lives once, in the catalog.
    assert not any(store.collection.get(include=["documents"])["documents"] or [])


def test_insecure_chunks_are_flagged_by_the_security_screen(indexed: tuple[RepoIndex, object]) -> None:
    index, _ = indexed
    got = index._get_store().collection.get(where={"path": "shop/shell.py"}, include=["metadatas"])
    flags = ",".join(m["security"] for m in got["metadatas"])
    assert "B602" in flags  # subprocess with shell=True, found by Bandit through security.screen
    clean = index._get_store().collection.get(where={"path": "shop/cart.py"}, include=["metadatas"])
    assert all(m["security"] == "" for m in clean["metadatas"])


def test_bad_files_skipped_and_run_goes_on(indexed: tuple[RepoIndex, object]) -> None:
    index, stats = indexed
    assert stats.skipped["blob.bin.txt"] == "binary (NUL bytes)"
    assert stats.skipped["latin1.py"].startswith("invalid UTF-8")
    assert index.skipped() == stats.skipped
    assert {"shop/pricing.py", "shop/checkout.py", "web/api.js", "docs/guide.md"} <= set(index.catalog.files())


def test_hybrid_search(indexed: tuple[RepoIndex, object]) -> None:
    index, _ = indexed
    hits = index.search("how much sales tax is owed for a region", k=5)
    assert hits[0].path in {"shop/pricing.py", "docs/guide.md"}
    assert any(h.path == "shop/pricing.py" and "compute_tax" in h.symbol for h in hits[:3])
    hits = index.search("fetchOrders", k=3)
    assert hits[0].path == "web/api.js" and hits[0].language == "javascript"
    assert hits[0].start_line <= 1 <= hits[0].end_line  # 0-based: `async function fetchOrders` is line 1


def test_completion_context_returns_definitions(indexed: tuple[RepoIndex, object]) -> None:
    index, _ = indexed
    text = ("from shop.pricing import compute_tax\nfrom shop.cart import Cart\n\n\n"
            "def invoice(cart, region):\n    amount = cart.subtotal()\n    tax = compute_tax(")
    snippets = index.completion_context("shop/invoice.py", text, 6, len("    tax = compute_tax("), max_chars=1500)
    reasons = {s.reason: s for s in snippets}
    assert "definition of compute_tax" in reasons
    d = reasons["definition of compute_tax"]
    assert d.path == "shop/pricing.py" and "def compute_tax(amount, region):" in d.text
    assert "definition of subtotal" in reasons
    assert sum(len(s.text) for s in snippets) <= 1500


def test_definitions_and_references(indexed: tuple[RepoIndex, object]) -> None:
    index, _ = indexed
    defs = index.definitions("compute_tax")
    assert [(d.path, d.line, d.kind) for d in defs] == [("shop/pricing.py", 5, "function")]
    assert defs[0].signature == "def compute_tax(amount, region):"
    refs = index.references("compute_tax")
    assert ("shop/checkout.py", 8) in {(r.path, r.line) for r in refs}
    assert [d.kind for d in index.definitions("add_item")] == ["method"]


def test_repo_map_is_deterministic_across_processes(indexed: tuple[RepoIndex, object]) -> None:
    index, _ = indexed
    here = index.repo_map(256)
    assert "shop/pricing.py:" in here and "def compute_tax(amount, region):" in here
    assert len(here) <= 256 * 4
    script = ("import sys; from indexing import RepoIndex, IndexConfig; "
              "ix = RepoIndex.open(sys.argv[1], IndexConfig(cache_dir=sys.argv[2])); "
              "sys.stdout.write(ix.repo_map(256)); ix.close()")
    outs = []
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", script, str(index.root), str(index.cache_dir)], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
        outs.append(done.stdout)
    assert outs[0] == outs[1] == here
    focused = index.repo_map(64, focus=["web/api.js"])
    assert focused.startswith("web/api.js:")


def test_status(indexed: tuple[RepoIndex, object]) -> None:
    index, _ = indexed
    status = index.status()
    assert status["store_mode"] == "persistent" and status["files"] >= 6
    assert status["cache_dir"] == str(index.cache_dir) and status["last_update"] is not None
    json.dumps(status)


def small_workspace(dest: Path) -> Path:
    for rel in ("shop/pricing.py", "shop/cart.py", "web/api.js"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, dest / rel)
    (dest / "blob.bin.txt").write_bytes(b"\x00\x01\x02binary")
    (dest / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    return dest


def test_incremental_updates(tmp_path: Path) -> None:
    ws = small_workspace(tmp_path / "ws")
    # Small chunks, no merging: pricing.py has one chunk per function, so an edit touches one chunk.
    with RepoIndex.open(ws, config(tmp_path, chunk_max_chars=300, chunk_merge_below_chars=0)) as index:
        first = index.update()
        assert first.files_indexed == 3 and first.chunks_embedded > 0
        again = index.update()
        assert (again.files_indexed, again.chunks_embedded) == (0, 0)
        assert again.files_unchanged + again.files_skipped == first.files_seen and again.files_skipped == 2
        os.utime(ws / "shop" / "cart.py", None)  # touched, same content: not re-embedded
        touched = index.update()
        assert touched.files_indexed == 0 and touched.chunks_embedded == 0
        before = {r.id: r for r in index.catalog.all_chunks() if r.path == "shop/pricing.py"}
        pricing = (ws / "shop" / "pricing.py").read_text()
        # A new function at the top: every old chunk moves down two lines, none changes its text.
        (ws / "shop" / "pricing.py").write_text(
            "def shipping_cost(weight_kg):\n    return 4.5 + 1.2 * weight_kg\n" + pricing)
        (ws / "web" / "api.js").unlink()
        changed = index.update()
        after = {r.id: r for r in index.catalog.all_chunks() if r.path == "shop/pricing.py"}
        assert set(before) < set(after)  # untouched chunks keep their ids (and stored vectors)
        metas = index._get_store().collection.get(ids=list(before), include=["metadatas"])
        for cid, meta in zip(metas["ids"], metas["metadatas"], strict=True):
            assert meta["start_line"] == before[cid].start_line + 2 == after[cid].start_line
        assert (changed.files_indexed, changed.files_removed) == (1, 1)
        # Only the new chunk text is embedded; unchanged chunks of pricing.py reuse their vectors.
        assert changed.chunks_embedded == 1 and changed.chunks_reused >= 2
        assert index.definitions("shipping_cost")[0].path == "shop/pricing.py"
        assert index.definitions("fetchOrders") == [] and not index.search("fetchOrders fetch orders", k=20) or \
            all(h.path != "web/api.js" for h in index.search("fetchOrders", k=20))
        store_ids = index._get_store().all_ids()
        assert store_ids == {r.id for r in index.catalog.all_chunks()}
        index.remove([ws / "shop" / "cart.py"])
        assert "shop/cart.py" not in index.catalog.files()
        assert index._get_store().all_ids() == {r.id for r in index.catalog.all_chunks()}
        one = index.update([ws / "shop" / "pricing.py", ws / "shop" / "cart.py"])
        assert one.files_indexed == 1 and one.files_unchanged == 1


def test_single_writer_lock(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws).mkdir()
    (ws / "a.py").write_text("def a():\n    return 1\n")
    cache = tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from indexing.lock import WriterLock; "
         "lock = WriterLock(Path(sys.argv[1]) / 'writer.lock'); lock.acquire(); print('locked', flush=True); "
         "time.sleep(60)", str(cache)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with RepoIndex.open(ws, IndexConfig(cache_dir=str(cache))) as index:
            with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"):
                index.update()
            assert index.status()["files"] == 0  # nothing was written
        holder.kill()
        holder.wait(10)
        with RepoIndex.open(ws, IndexConfig(cache_dir=str(cache), lock_timeout_s=5)) as index:
            assert index.update().files_indexed == 1  # the kernel dropped the dead holder's lock
    finally:
        holder.kill()
        holder.wait(10)


def test_cancel_then_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = small_workspace(tmp_path / "ws")
    cancel = threading.Event()
    seen: list[tuple[int, int, str]] = []

    def progress(done: int, total: int, path: str) -> None:
        seen.append((done, total, path))
        cancel.set()

    with RepoIndex.open(ws, config(tmp_path, batch_chunks=1)) as index:
        with caplog.at_level(logging.INFO, logger="indexing"):
            stats = index.update(progress=progress, cancel=cancel)
        assert stats.cancelled and stats.files_indexed < stats.files_seen
        # The first file in walk order is the binary one: skipped, with the reason in the log.
        assert "skipped blob.bin.txt: binary (NUL bytes)" in caplog.messages
        rest = index.update()
        assert not rest.cancelled and rest.files_indexed + stats.files_indexed == 3
        assert set(index.catalog.files()) == {"shop/pricing.py", "shop/cart.py", "web/api.js"}
        assert index._get_store().all_ids() == {r.id for r in index.catalog.all_chunks()}


def test_many_batches_in_flight_store_what_one_batch_stores(tmp_path: Path) -> None:
    """Several embedding workers with tiny batches (many in flight, finished in order) leave the same
    catalog rows and vectors as one batch embedded on the calling thread. fp32 here: int8 activations
    are quantized per batch, so an int8 vector depends slightly on its batch-mates."""
    import numpy as np

    ws = make_workspace(tmp_path / "ws")
    results = []
    runs = ({"batch_chunks": 100_000, "embed_workers": 1}, {"batch_chunks": 1, "embed_workers": 3})
    for n, kw in enumerate(runs):
        cfg = IndexConfig(cache_dir=str(tmp_path / f"cache{n}"), embed_quantize=False, **kw)  # type: ignore[arg-type]
        with RepoIndex.open(ws, cfg) as index:
            stats = index.update()
            rows = {r.id: (r.path, r.start_line, r.end_line, r.symbol) for r in index.catalog.all_chunks()}
            assert index._get_store().all_ids() == set(rows)
            results.append((stats.files_indexed, rows, index._get_store().embeddings(sorted(rows))))
    (files_a, rows_a, vecs_a), (files_b, rows_b, vecs_b) = results
    assert files_a == files_b and len(rows_a) >= 8 and rows_a == rows_b
    for cid, vec in vecs_a.items():
        np.testing.assert_allclose(vecs_b[cid], vec, atol=1e-4)


def test_orphans_from_an_interrupted_write_are_removed(tmp_path: Path) -> None:
    import numpy as np

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.py").write_text("def a():\n    return 1\n")
    with RepoIndex.open(ws, config(tmp_path)) as index:
        index.update()
        # Simulate a crash after step 2 (vectors upserted) but before the catalog commit.
        index.catalog.journal_add(["orphan-1"])
        index._get_store().upsert(["orphan-1"], np.ones((1, 384), dtype=np.float32), ["x"], [{"path": "gone.py"}])
        assert "orphan-1" in index._get_store().all_ids()
        assert all(h.path != "gone.py" for h in index.search("x", k=10))  # never surfaced meanwhile
        index.update()
        assert index._get_store().all_ids() == {r.id for r in index.catalog.all_chunks()}


def test_open_rejects_a_missing_workspace(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="not a directory"):
        RepoIndex.open(tmp_path / "nope")


def test_an_edit_rescreens_only_new_chunks_and_keeps_the_other_flags(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    doc = '    """' + "Explains at length what this function does, so that it is a chunk of its own. " * 6 + '"""\n'
    helpers = "\n\n".join(f"def helper_{i}(value):\n{doc}    total = value * {i}\n    return total + {i}\n"
                            for i in range(6))
    risky = f"def run_report(command):\n{doc}    return subprocess.call(command, shell=True)\n"
    (ws / "tools.py").write_text("import subprocess\n\n\n" + risky + "\n\n" + helpers)
    index = RepoIndex(ws, IndexConfig(cache_dir=str(tmp_path / "cache")))
    try:
        index.update()
        calls: list[str] = []
        screen = index._updater.screen
        assert screen is not None

        def counting(text: str, *args: object, **kw: object) -> object:
            calls.append(text)
            return screen(text, *args, **kw)

        index._updater.screen = counting
        unsafe = f"def load_state(blob):\n{doc}    import pickle\n    return pickle.loads(blob)\n"
        (ws / "tools.py").write_text("import subprocess\n\n\n" + risky + "\n\n" + helpers + "\n\n" + unsafe)
        index.update([ws / "tools.py"])
        # One new chunk was screened on its own; the whole file was not.
        assert len(calls) == 1 and "pickle.loads" in calls[0] and "shell=True" not in calls[0]
        by_symbol = {r.symbol: r.flags for r in index.catalog.all_chunks()}
        assert "B602" in by_symbol["run_report"]  # kept from the first screen
        assert "B301" in by_symbol["load_state"]  # found by screening the new chunk alone
        assert all(by_symbol[f"helper_{i}"] == "" for i in range(6))
    finally:
        index.close()


def test_a_file_update_defers_orphan_deletes_which_stay_invisible(tmp_path: Path) -> None:
    ws = small_workspace(tmp_path / "ws")
    with RepoIndex.open(ws, config(tmp_path, chunk_max_chars=300, chunk_merge_below_chars=0)) as index:
        index.update()
        pricing = ws / "shop" / "pricing.py"
        text = pricing.read_text()
        pricing.write_text(text.replace("def ", "def renamed_", 1))  # one chunk's text changes
        index.update([pricing])
        store_ids, catalog_ids = index._get_store().all_ids(), {r.id for r in index.catalog.all_chunks()}
        orphans = store_ids - catalog_ids
        assert len(orphans) == 1 and set(index.catalog.journal_orphans()) == orphans  # deferred, journalled
        hits = index.search("compute_tax sales tax owed amount region", k=20)
        assert hits and all(h.symbol != "compute_tax" for h in hits)  # the orphan (old text) is never shown
        assert any(h.symbol == "renamed_compute_tax" for h in hits)
        index.update()  # a whole-workspace run deletes what was deferred
        assert index._get_store().all_ids() == {r.id for r in index.catalog.all_chunks()}


def test_changed_embedding_settings_rebuild_the_index(tmp_path: Path) -> None:
    ws = small_workspace(tmp_path / "ws")
    with RepoIndex.open(ws, config(tmp_path, embed_max_tokens=32)) as index:
        assert index.update().chunks_embedded > 0
        assert index.catalog.get_meta("embedding_input") == "32 tokens, int8"
    # Same settings: nothing to embed. Longer inputs give other vectors: the cache is rebuilt, not mixed.
    with RepoIndex.open(ws, config(tmp_path, embed_max_tokens=32)) as index:
        assert index.update().chunks_embedded == 0
    with RepoIndex.open(ws, config(tmp_path, embed_max_tokens=64)) as index:
        assert index.catalog.counts()["chunks"] == 0  # wiped on open
        rebuilt = index.update()
        assert rebuilt.files_indexed == 3 and rebuilt.chunks_embedded > 0
        assert index.catalog.get_meta("embedding_input") == "64 tokens, int8"
        assert index._get_store().all_ids() == {r.id for r in index.catalog.all_chunks()}
    # Unset (as `protege search` leaves it): the index keeps the length it was built with.
    with RepoIndex.open(ws, config(tmp_path)) as index:
        assert index.config.embed_max_tokens == 64 and index.update().chunks_embedded == 0
        assert index.search("cart total", k=3)
