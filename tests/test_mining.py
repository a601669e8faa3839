"""Prompt mining on real files with real tree-sitter and real git: spans, pairs, dedup, split, versioning."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from distill_code.mining import (
    MiningConfig,
    MiningError,
    load_dataset,
    mine_file,
    mine_repository,
    mine_to_disk,
)

SAMPLE = '''"""A module."""


def add(a, b):
    """Add two numbers and return the sum of them."""
    total = compute(a, b, scale=2)
    if total > 10:
        total = clamp(total)
    return total


class Box:
    """A box that holds one value for later use."""

    def get(self):
        # Return the stored value to the caller
        value = self.value
        return value
'''


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin", "HOME": str(repo)})


def _module(i: int) -> str:
    return SAMPLE.replace("add", f"add_{i}").replace("Box", f"Box{i}").replace("scale=2", f"scale={i}")


def test_fim_spans_reassemble_the_file_and_cover_every_kind() -> None:
    cfg = MiningConfig(max_prefix_chars=10**6, max_suffix_chars=10**6)
    examples = mine_file("m.py", SAMPLE, cfg)
    fim = [e for e in examples if e.task == "fim"]
    assert {e.kind for e in fim} == {"body", "block", "statement", "arguments", "line_remainder"}
    for e in fim:
        # prefix + middle + suffix is the file: spans are exact byte ranges, not approximations.
        assert e.prefix + e.middle + e.suffix == SAMPLE, e.kind
        assert e.middle.strip() == e.middle or e.kind in ("arguments", "line_remainder", "statement")
    bodies = {e.middle for e in fim if e.kind == "body"}
    assert "value = self.value\n        return value" in bodies
    args = {e.middle for e in fim if e.kind == "arguments"}
    assert "a, b, scale=2" in args
    # A body completion starts where the cursor is after Enter: the prefix ends in indentation.
    body = next(e for e in fim if e.kind == "body" and e.middle.startswith('"""Add'))
    assert body.prefix.endswith("def add(a, b):\n    ")


def test_explanation_pairs_use_the_server_explain_layout() -> None:
    pairs = {e.middle: e for e in mine_file("m.py", SAMPLE, MiningConfig()) if e.task == "explain"}
    add = pairs["Add two numbers and return the sum of them."]
    # The docstring slot: header + opening quotes, then the body without the docstring.
    assert add.kind == "docstring" and add.prefix == 'def add(a, b):\n    """'
    assert add.suffix.startswith('"""\n    total = compute(a, b, scale=2)') and "Add two" not in add.suffix
    comment = pairs["Return the stored value to the caller"]
    assert comment.kind == "comment" and comment.prefix == "        # "
    assert comment.suffix == "\n        value = self.value\n        return value\n"


def test_truncation_limits_and_determinism() -> None:
    cfg = MiningConfig(max_prefix_chars=50, max_suffix_chars=20, max_middle_lines=2)
    a = mine_file("m.py", SAMPLE, cfg)
    assert a and all(len(e.prefix) <= 50 and len(e.suffix) <= 20 for e in a if e.task == "fim")
    assert all(e.middle.count("\n") < 2 for e in a if e.task == "fim")
    assert [e.id for e in a] == [e.id for e in mine_file("m.py", SAMPLE, cfg)]


def test_broken_and_unknown_files_do_not_abort_mining() -> None:
    broken = SAMPLE + "\ndef oops(:\n    pass\n"
    assert any(e.task == "fim" for e in mine_file("b.py", broken, MiningConfig()))
    assert mine_file("notes.txt", "hello", MiningConfig()) == []


def test_repository_split_by_recent_commits_dedup_and_versioned_dataset(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    for i in range(8):
        (repo / "pkg" / f"m{i}.py").write_text(_module(i))
    (repo / "pkg" / "copy.py").write_text(_module(0))  # a vendored duplicate
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "initial")
    (repo / "pkg" / "m5.py").write_text(_module(5) + "\n\ndef extra(x):\n    return helper(x, 5)\n")
    _git(repo, "commit", "-qam", "latest change")

    cfg = MiningConfig(heldout_fraction=0.1, use_index=False)
    examples, summary = mine_repository(repo, cfg)
    assert summary["split_reason"] == "recent-commits"
    assert summary["heldout_files"] == ["pkg/m5.py"]
    held_paths = {e.path for e in examples if e.split == "heldout"}
    assert held_paths == {"pkg/m5.py"}
    assert not any(e.path == "pkg/copy.py" for e in examples) or not any(e.path == "pkg/m0.py" for e in examples)
    assert len({e.id for e in examples}) == len(examples)

    out = tmp_path / "datasets"
    ds = mine_to_disk(repo, out, cfg)
    assert (out / "LATEST").read_text().strip() == ds.version
    assert ds.manifest["git_head"] and ds.manifest["heldout"] == len(ds.heldout) > 0
    again = mine_to_disk(repo, out, cfg)
    assert again.version == ds.version  # unchanged repository, same version
    loaded = load_dataset(out)
    assert [e.id for e in loaded.train] == [e.id for e in ds.train]
    (repo / "pkg" / "m1.py").write_text(_module(1) + "\n\ndef more(y):\n    return y * 2\n")
    assert mine_to_disk(repo, out, cfg).version != ds.version
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2


def test_hash_split_outside_git_and_clear_errors(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"f{i}.py").write_text(_module(i))
    _, summary = mine_repository(tmp_path, MiningConfig(heldout_fraction=0.2, use_index=False))
    assert summary["split_reason"] == "hash" and len(summary["heldout_files"]) == 2
    with pytest.raises(MiningError, match="git history"):
        mine_repository(tmp_path, MiningConfig(split="commits", use_index=False))
    with pytest.raises(MiningError, match="not a directory"):
        mine_repository(tmp_path / "missing")
    with pytest.raises(MiningError, match="no dataset"):
        load_dataset(tmp_path / "nothing")
