"""kill -9 during a model promotion (issue 18, item 4): whatever moment the process dies, the model a
server would load for the workspace is the old one or the new one, complete, never half of one and never
the starter fallback once a model was promoted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from distill_code.workspace import promoted_model_dir, served_promoted_model

ROOT = Path(__file__).resolve().parents[1]
FILES = 120


def _model(path: Path, marker: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"marker": marker}))
    blob = os.urandom(64 * 1024)
    for i in range(FILES):
        (path / f"model-{i:03d}.safetensors").write_bytes(blob)
    return path


def _check(ws: Path, allowed: set[str]) -> str:
    served = served_promoted_model(ws)
    assert served is not None, "a promoted model existed, yet none would be served"
    marker = json.loads((served / "config.json").read_text())["marker"]
    assert marker in allowed, marker
    assert len(list(served.glob("*.safetensors"))) == FILES, f"{served} is incomplete"
    return marker


def test_kill_9_at_any_moment_of_promotion_serves_old_or_new(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from distill_code.evaluate import promote

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = dict(os.environ)
    ws = tmp_path / "ws"
    ws.mkdir()
    a, b = _model(tmp_path / "a", "A"), _model(tmp_path / "b", "B")
    t0 = time.perf_counter()
    promote(a, ws)
    promote_s = time.perf_counter() - t0  # how long one promotion takes here: the kill window
    assert _check(ws, {"A"}) == "A"
    # The child signals once its imports are done, then promotes at once: the kill lands in the copy,
    # between the renames or just after, not in the interpreter's start-up.
    code = ("import sys; from distill_code.evaluate import promote; print('ready', flush=True); "
            "promote(sys.argv[1], sys.argv[2]); print('done', flush=True)")
    rng = random.Random(7)
    current, killed = "A", 0
    for _ in range(10):
        new_dir, new = (b, "B") if current == "A" else (a, "A")
        proc = subprocess.Popen([sys.executable, "-c", code, str(new_dir), str(ws)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 1.5 * promote_s))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        out = proc.stdout.read()
        proc.wait()
        served = _check(ws, {current, new})
        if b"done" in out:
            assert served == new
        current = served
    assert killed >= 4
    # The next promotion after any crash completes and is served.
    final_dir, final = (b, "B") if current == "A" else (a, "A")
    subprocess.run([sys.executable, "-c", code, str(final_dir), str(ws)], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL)
    assert _check(ws, {final}) == final and (promoted_model_dir(ws) / "config.json").exists()
