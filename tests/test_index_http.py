"""HttpClient mode against a real `chroma run` server started here (the chromadb package ships the CLI)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexing import IndexConfig, RepoIndex
from indexing.store import StoreError

REPO = Path(__file__).parent / "fixtures" / "index" / "repo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    data = tmp_path_factory.mktemp("chroma-data")
    port = _free_port()
    log = (data / "server.log").open("w")
    proc = subprocess.Popen([exe, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"chroma run did not start: {(data / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


@pytest.mark.slow
def test_index_and_search_through_a_chroma_server(chroma_server: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(REPO, ws)
    cfg = IndexConfig(cache_dir=str(tmp_path / "cache"), chroma_url=chroma_server)
    with RepoIndex.open(ws, cfg) as index:
        stats = index.update()
        assert stats.files_indexed == 6  # five sources and the .gitignore (text)
        status = index.status()
        assert status["store_mode"] == "http" and status["chroma_url"] == chroma_server
        # The vectors live on the server: a plain client sees the collection and its metadata.
        import chromadb

        host, port = chroma_server.rsplit(":", 1)
        client = chromadb.HttpClient(host=host.removeprefix("http://"), port=int(port))
        collection = client.get_collection(index.collection_name)
        assert collection.count() == status["chunks"]
        got = collection.get(where={"path": "shop/pricing.py"}, include=["metadatas", "documents"])
        assert got["metadatas"] and got["metadatas"][0]["language"] == "python"
        assert got["documents"] and all(d for d in got["documents"])  # a shared server gets the text too
        hits = index.search("sales tax owed in a region", k=3)
        assert any(h.path == "shop/pricing.py" for h in hits)
        (ws / "web" / "api.js").unlink()
        assert index.update().files_removed == 1
        assert collection.count() == index.status()["chunks"]
        assert not collection.get(where={"path": "web/api.js"})["ids"]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "a.py").write_text("x = 1\n")
    cfg = IndexConfig(cache_dir=str(tmp_path / "cache"), chroma_url=f"http://127.0.0.1:{_free_port()}")
    with RepoIndex.open(tmp_path / "ws", cfg) as index:
        with pytest.raises(StoreError, match="cannot reach the ChromaDB server"):
            index.update()
        assert index.status()["files"] == 0  # nothing committed without the store
