"""kill -9 during distillation (issue 18, item 4): at whatever moment `protege distill` dies, the run
directory holds one complete checkpoint (the previous one or the newest, never new weights under an old
step count), the next run resumes from it and finishes, and no half-written model is left behind."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch

from distill_code.modeling import LlamaShape, load_causal_lm
from distill_code.tiny import build_tiny_model_dir
from distill_code.trainer import _recover_dir, _swap_into_place
from distill_code.workspace import promoted_model_dir

ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
CLI = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"


def _recipe(path: Path) -> Path:
    text = (ROOT / "recipes" / "distill-tiny-ci.toml").read_text()
    text = re.sub(r"(?m)^steps = \d+$", "steps = 60", text)
    text = re.sub(r"(?m)^save_every = \d+$", "save_every = 1", text)  # a checkpoint swap every step
    assert "steps = 60" in text and "save_every = 1" in text
    path.write_text(text)
    return path


def _checkpoint_consistent(ckpt: Path) -> int | None:
    """The step of the checkpoint on disk (None if there is none); asserts it is complete and loadable."""
    if not ckpt.exists():
        return None
    state = json.loads((ckpt / "trainer_state.json").read_text())
    step = int(state["step"])
    assert len(state["history"]) == step, "the history does not match the step count"
    weights = [p for p in ckpt.iterdir() if p.suffix in (".bin", ".safetensors") and "model" in p.name]
    assert weights, f"no model weights in {sorted(p.name for p in ckpt.iterdir())}"
    for p in weights:
        if p.suffix == ".bin":
            torch.load(p, map_location="cpu", weights_only=True)
    return step


def test_swap_leaves_old_or_new_and_recovers(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "trainer_state.json").write_text('{"step": 1}')
    new = tmp_path / "checkpoint.partial"
    new.mkdir()
    (new / "trainer_state.json").write_text('{"step": 2}')
    _swap_into_place(new, target)
    assert json.loads((target / "trainer_state.json").read_text())["step"] == 2
    assert not new.exists() and not (tmp_path / "checkpoint.old").exists()
    # A crash between the two renames: only `.old` is left, and it is put back.
    target.rename(tmp_path / "checkpoint.old")
    (tmp_path / "checkpoint.partial").mkdir()  # and a half-written next one
    _recover_dir(target, "trainer_state.json")
    assert json.loads((target / "trainer_state.json").read_text())["step"] == 2
    assert not (tmp_path / "checkpoint.old").exists() and not (tmp_path / "checkpoint.partial").exists()
    # An `.old` without its marker is not a complete checkpoint: it is dropped, not resumed.
    shutil.rmtree(target)
    (tmp_path / "checkpoint.old").mkdir()
    _recover_dir(target, "trainer_state.json")
    assert not target.exists() and not (tmp_path / "checkpoint.old").exists()


def test_kill_9_during_distillation_resumes_consistently(tiny_model_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("bisect.py", "colorsys.py", "shlex.py", "glob.py", "fnmatch.py"):
        shutil.copy(STDLIB / name, repo / name)
    student = build_tiny_model_dir(tmp_path / "student", LlamaShape(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        seed=1)
    ws, run = tmp_path / "ws", tmp_path / "run"
    ws.mkdir()
    recipe = _recipe(tmp_path / "recipe.toml")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", CLI, "--log-level", "INFO", "distill", str(repo), "--recipe", str(recipe),
            "--teacher", str(tiny_model_dir), "--student", str(student), "--workspace", str(ws),
            "--out", str(run), "--json"]
    ckpt = run / "checkpoint"
    rng = random.Random(18)
    kills, steps_seen = 0, []
    for _ in range(3):
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not (ckpt / "trainer_state.json").exists():
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.8))  # somewhere in the steps and checkpoint swaps that follow
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        step = _checkpoint_consistent(ckpt)
        if step is None and (run / "checkpoint.old").exists():
            # Killed between the swap's two renames: the earlier checkpoint is complete at `.old`.
            step = _checkpoint_consistent(run / "checkpoint.old")
        steps_seen.append(step)
        assert not (run / "model").exists() or (run / "model" / "config.json").exists(), "a half model at run/model"
        # Nothing was promoted half-way: the workspace serves the old model (none) or a complete new one.
        promoted = promoted_model_dir(ws)
        assert not promoted.exists() or (promoted / "config.json").exists()
    assert kills >= 2, f"the runs ended before they could be killed ({kills} kills)"
    assert any(s for s in steps_seen), f"no checkpoint survived a kill: {steps_seen}"

    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = [int(m) for m in re.findall(r"resuming from step (\d+)", done.stderr)]
    assert resumed and resumed[0] >= max(s for s in steps_seen if s), (resumed, steps_seen)
    report = json.loads(done.stdout)
    assert report["train"]["resumed_from"] == resumed[0]
    load_causal_lm(run / "model")
    leftovers = [p.name for p in run.iterdir() if p.name.endswith((".partial", ".old"))]
    assert leftovers == [] and not ckpt.exists(), leftovers  # a finished run leaves no checkpoint to resume
