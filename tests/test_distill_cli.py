"""`protege distill` and `protege eval` end to end at toy scale: real mining, teacher, training, gate, int8."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from distill_code.modeling import LlamaShape, load_causal_lm
from distill_code.tiny import build_tiny_model_dir
from distill_code.workspace import promoted_model_dir
from server.cli import main

ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared box: extra threads only contend
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("student"), LlamaShape(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        seed=1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("repo")
    for name in ("bisect.py", "colorsys.py", "shlex.py", "glob.py", "fnmatch.py"):
        shutil.copy(STDLIB / name, r / name)
    return r


def test_distill_then_eval_end_to_end(repo: Path, tiny_model_dir: Path, student_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    run = tmp_path / "run"
    rc = main(["distill", str(repo), "--recipe", str(ROOT / "recipes" / "distill-tiny-ci.toml"),
               "--teacher", str(tiny_model_dir), "--student", str(student_dir), "--workspace", str(ws),
               "--out", str(run), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_examples"] > 0 and report["heldout_examples"] > 0
    assert set(report["eval"]) == {"teacher", "current", "candidate"}
    for r in report["eval"].values():
        assert {"exact_match", "edit_similarity", "nll", "teacher_top1_agreement", "latency_p50_ms"} <= set(r)
    assert report["train"]["targets"]["bytes_per_token"] == 8 * 4 + 2
    assert set(report["compression"]) == {"fp32", "int8"}
    gate = report["gate"]
    assert gate["promote"] == (gate["candidate_score"] > gate["current_score"]
                               and report["eval"]["candidate"]["latency_p50_ms"] <= gate["latency_budget_ms"])
    assert promoted_model_dir(ws).exists() == gate["promote"]
    if gate["promote"]:
        load_causal_lm(promoted_model_dir(ws))
    curves = json.loads((run / "loss_curves.json").read_text())
    assert len(curves) == 12 and (run / "report.json").exists()

    rc = main(["eval", str(repo), "--model", str(student_dir), "--model", str(run / "model"),
               "--workspace", str(ws), "--max-examples", "4", "--max-new-tokens", "6", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == {str(student_dir), str(run / "model")}
    for r in out["models"].values():
        assert {"exact_match", "edit_similarity", "nll"} <= set(r) and r["examples"] == 4
    # The held-out split is the one distill used: same content, same dataset version.
    assert out["dataset"] == report["dataset"]

    rc = main(["eval", str(repo), "--model", str(student_dir), "--max-examples", "2", "--max-new-tokens", "4"])
    table = capsys.readouterr().out
    assert rc == 0 and "exact_match" in table and str(student_dir) in table


def test_bad_input_is_one_clear_error(repo: Path, tmp_path: Path, tiny_model_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", str(tmp_path / "missing"), "--teacher", str(tiny_model_dir),
                 "--student", str(tiny_model_dir)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstesp = 3\n")
    assert main(["distill", str(repo), "--recipe", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['stesp'] in [train]" in err and err.count("\n") == 1
    assert main(["eval", str(repo), "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_complete_uses_the_workspaces_promoted_student(tiny_model_dir: Path, student_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`protege complete` serves what `protege serve` would: the promoted student, unless --model says otherwise."""
    ws = tmp_path / "ws"
    ws.mkdir()
    src = ws / "util.py"
    src.write_text("def double(x):\n    return x * 2\n", encoding="utf-8")
    assert main(["complete", f"{src}:2:12", "--workspace", str(ws), "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["model"]).name == "student"  # nothing promoted: the starter
    shutil.copytree(student_dir, promoted_model_dir(ws))
    assert main(["complete", f"{src}:2:12", "--workspace", str(ws), "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["model"]) == promoted_model_dir(ws)
    assert main(["complete", f"{src}:2:12", "--workspace", str(ws), "--model", str(tiny_model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(tiny_model_dir)
