"""Background indexing steps aside while interactive work (a completion) is in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from indexing import IndexConfig, RepoIndex
from indexing.foreground import FOREGROUND, Foreground, lower_thread_priority


def test_wait_idle_blocks_while_active_and_gives_up_after_max_wait() -> None:
    gate = Foreground()
    assert gate.wait_idle() is False and not gate.busy
    released = threading.Event()

    def hold() -> None:
        with gate.active(), gate.active():  # nests
            released.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    while not gate.busy:
        time.sleep(0.001)
    t0 = time.perf_counter()
    assert gate.wait_idle(max_wait_s=0.2) is True  # still active: gives up after max_wait
    assert time.perf_counter() - t0 >= 0.19 and gate.busy
    threading.Timer(0.1, released.set).start()
    assert gate.wait_idle(max_wait_s=5) is True and not gate.busy
    t.join()


def test_an_index_update_waits_for_requests_in_flight(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    for n in range(3):
        (ws / f"m{n}.py").write_text(f"def f{n}(x):\n    return x + {n}\n")
    seen: list[str] = []
    with RepoIndex.open(ws, IndexConfig(cache_dir=str(tmp_path / "cache"))) as index:
        index.warm_up()
        result = {}
        with FOREGROUND.active():
            t = threading.Thread(target=lambda: result.update(stats=index.update(
                progress=lambda done, total, path: seen.append(path))))
            t.start()
            time.sleep(0.5)
            assert seen == [] and t.is_alive()  # nothing read while a request runs
        t.join(60)
        assert result["stats"].files_indexed == 3 and len(seen) == 3


def test_lower_thread_priority_only_lowers_the_calling_thread() -> None:
    import os

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    got = {}

    def worker() -> None:
        lower_thread_priority(5)
        got["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert got["nice"] >= 5
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
