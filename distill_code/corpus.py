"""Pretraining corpus: the standard library and chosen permissive packages, filtered, deduplicated, split by file.

The corpus text is never committed; only its manifest (every file's path, bytes, tokens and
sha256, plus the split) is, so a run can be checked against the exact data it saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Directory names whose files are tests, fixtures or bundled third-party code, not code to learn from.
_SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3",
    "ensurepip", "pydoc_data", "turtledemo", "data", "fixtures", "testdata",
})
# Bundled copies of other projects: never their own code, and they would leak evaluation repositories in.
_VENDORED_DIRS = frozenset({
    "_vendor", "vendor", "vendored", "_vendored", "extern", "_extern", "third_party", "_bundled",
    "array_api_compat", "array_api_extra", "_uarray", "_distutils", "distutils",
})
_TEST_DIRS = frozenset({"test", "tests", "idle_test"})
# Packages the benchmarks and model cards evaluate on: their files never enter a corpus, even vendored
# under another name, so held-out figures stay honest.
HELDOUT_PACKAGES = frozenset({"click", "pyparsing", "httpx", "typer", "tenacity", "idna", "httpcore"})
# Markers of machine-written files (codec tables, generated parsers, opcode tables).
_GENERATED = re.compile(r"(auto-?generated|generated (by|from|with)|gencodec|do not edit|automatically generated)", re.IGNORECASE)


class CorpusError(RuntimeError):
    """The corpus could not be built; the message says what to do."""


@dataclass
class CorpusConfig:
    """Where the source comes from and how it is filtered and split."""

    # Empty: the running CPython's stdlib. "stdlib", "pkg:NAME" (an installed package, e.g. "pkg:numpy") and
    # "pypi:NAME==VERSION" (a wheel fetched once into ``cache_dir``, see ``distill_code.corpus_fetch``) are
    # resolved on this machine, so recipes carry no machine-specific paths.
    roots: list[str] = field(default_factory=list)
    cache_dir: str = "runs/corpus-cache"  # where pypi: roots are downloaded and unpacked
    include_tests: bool = False  # test code is code users write too; fixtures and data stay out either way
    near_duplicates: bool = False  # also drop files whose lines mostly repeat an earlier file's (MinHash)
    max_file_bytes: int = 200_000  # bigger files are almost always data tables
    min_file_bytes: int = 200
    validation_fraction: float = 0.03
    max_files: int = 0  # 0: no cap (toy recipes cap it to stay fast)


@dataclass
class CorpusFile:
    path: str  # relative to its root, with the root's label in front
    sha256: str
    bytes: int
    split: str  # "train" or "validation"
    tokens: int = 0


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def resolve_root(spec: str, cache_dir: str = "runs/corpus-cache") -> tuple[Path, dict[str, str]]:
    """(directory, source record with name and license) for one ``roots`` entry."""
    if spec == "stdlib":
        return stdlib_root(), _stdlib_source()
    if spec.startswith("pypi:"):
        from distill_code.corpus_fetch import fetched_root

        return fetched_root(spec[5:], Path(cache_dir))
    if spec.startswith("pkg:"):
        import importlib.metadata
        import importlib.util

        name = spec[4:]
        found = importlib.util.find_spec(name)
        if found is None or not found.submodule_search_locations:
            raise CorpusError(f"package {name!r} is not installed in this environment; remove {spec!r} from 'roots'")
        try:
            meta: Any = importlib.metadata.metadata(name)
            lic = meta.get("License-Expression") or meta.get("License") or "see package metadata"
            version = meta.get("Version", "?")
        except importlib.metadata.PackageNotFoundError:
            lic, version = "see package metadata", "?"
        return Path(list(found.submodule_search_locations)[0]), {"name": f"{name} {version}", "license": lic[:80]}
    return Path(spec).expanduser(), {"name": spec, "license": "unknown: check before shipping"}


def _stdlib_source() -> dict[str, str]:
    v = sys.version_info
    return {"name": f"CPython {v.major}.{v.minor}.{v.micro} standard library", "license": "PSF-2.0"}


def _label(root: Path) -> str:
    if root.resolve() == stdlib_root().resolve():
        return f"cpython-{sys.version_info.major}.{sys.version_info.minor}-stdlib"
    return root.name


def _skip_dirs(cfg: CorpusConfig) -> frozenset[str]:
    return (_SKIP_DIRS - _TEST_DIRS) if cfg.include_tests else _SKIP_DIRS


def _skip_reason(rel: Path, text: str, cfg: CorpusConfig) -> str | None:
    parts = set(rel.parts[:-1])
    if parts & _VENDORED_DIRS:
        return "vendored directory"
    if {p.lower() for p in rel.parts} & HELDOUT_PACKAGES or rel.stem.lower() in HELDOUT_PACKAGES:
        return "held-out evaluation package"
    if parts & _skip_dirs(cfg):
        return "test/fixture directory"
    name = rel.name
    if not cfg.include_tests and (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"):
        return "test file"
    size = len(text.encode("utf-8"))
    if size > cfg.max_file_bytes:
        return "too large (data table)"
    if size < cfg.min_file_bytes:
        return "too small"
    if _GENERATED.search(text[:2000]):
        return "generated"
    # Codec tables and similar: mostly string literals of escapes, few identifiers.
    if text.count("\\x") + text.count("\\u") > size / 40:
        return "data table"
    lines = text.splitlines() or [""]
    if max(map(len, lines)) > 2000 or size / len(lines) > 120:
        return "minified or data (long lines)"
    digits = sum(ch.isdigit() for ch in text)
    if digits > 0.25 * (size - text.count(" ") - text.count("\n") + 1):
        return "data table (mostly numbers)"
    return None


def _split_for(digest: str, fraction: float) -> str:
    # Split by content hash: stable across machines and runs, and by file so no file leaks across.
    return "validation" if int(digest[:8], 16) / 0xFFFFFFFF < fraction else "train"


def _python_files(root: Path, skip: frozenset[str] = _SKIP_DIRS) -> list[Path]:
    # Prune skipped directories while walking: the stdlib root also holds site-packages (thousands of files).
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and d not in _VENDORED_DIRS
                             and not d.endswith(".dist-info"))
        out.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(out)


def corpus_sources(cfg: CorpusConfig) -> list[dict[str, str]]:
    return [resolve_root(r, cfg.cache_dir)[1] for r in (cfg.roots or ["stdlib"])]


def collect_corpus(cfg: CorpusConfig) -> tuple[list[CorpusFile], dict[str, str]]:
    """Collect, filter, deduplicate and split source files; return (entries, text by path)."""
    roots = [resolve_root(r, cfg.cache_dir)[0] for r in (cfg.roots or ["stdlib"])]
    entries: list[CorpusFile] = []
    texts: dict[str, str] = {}
    seen: set[str] = set()
    skipped: dict[str, int] = {}
    for root in roots:
        if not root.is_dir():
            raise CorpusError(f"corpus root {str(root)!r} is not a directory; fix 'roots' in the recipe")
        label = _label(root)
        for p in _python_files(root, _skip_dirs(cfg)):
            rel = p.relative_to(root)
            try:
                text = p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                skipped["unreadable"] = skipped.get("unreadable", 0) + 1
                continue
            reason = _skip_reason(rel, text, cfg)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if digest in seen:
                skipped["duplicate"] = skipped.get("duplicate", 0) + 1
                continue
            seen.add(digest)
            key = f"{label}/{rel.as_posix()}"
            entries.append(CorpusFile(key, digest, len(text.encode("utf-8")), _split_for(digest, cfg.validation_fraction)))
            texts[key] = text
    if cfg.near_duplicates:
        from distill_code.near_dup import near_duplicate_keys

        drop = near_duplicate_keys([(e.path, texts[e.path]) for e in entries])
        if drop:
            skipped["near-duplicate"] = len(drop)
            entries = [e for e in entries if e.path not in drop]
            texts = {e.path: texts[e.path] for e in entries}
    if cfg.max_files and len(entries) > cfg.max_files:
        # Deterministic subsample that keeps some validation files.
        step = len(entries) / cfg.max_files
        keep = {int(i * step) for i in range(cfg.max_files)}
        entries = [e for i, e in enumerate(entries) if i in keep]
        if not any(e.split == "validation" for e in entries):
            entries[-1].split = "validation"
        texts = {e.path: texts[e.path] for e in entries}
    if not entries:
        raise CorpusError("no source files survived filtering; check 'roots' in the recipe")
    log.info("corpus: %d files kept, skipped %s", len(entries), skipped)
    return entries, texts


def count_tokens(entries: Sequence[CorpusFile], texts: dict[str, str], tokenizer: Any) -> None:
    """Fill each entry's token count with ``tokenizer`` (a HF fast tokenizer)."""
    paths = [e.path for e in entries]
    for i in range(0, len(paths), 256):
        batch = paths[i:i + 256]
        enc = tokenizer([texts[p] for p in batch], add_special_tokens=False)["input_ids"]
        for e, ids in zip(entries[i:i + 256], enc, strict=True):
            e.tokens = len(ids)


def write_manifest(entries: Sequence[CorpusFile], path: str | Path, sources: Iterable[dict[str, str]] = ()) -> dict:
    """Write the manifest JSON (totals per split, sources with licenses, every file) and return it."""
    totals: dict[str, dict[str, int]] = {}
    for e in entries:
        t = totals.setdefault(e.split, {"files": 0, "bytes": 0, "tokens": 0})
        t["files"] += 1
        t["bytes"] += e.bytes
        t["tokens"] += e.tokens
    manifest = {
        "sources": list(sources) or [_stdlib_source()],
        "totals": totals,
        "corpus_sha256": hashlib.sha256("".join(e.sha256 for e in entries).encode()).hexdigest(),
        "files": [asdict(e) for e in entries],
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(manifest, indent=1))
    return manifest


def split_texts(entries: Sequence[CorpusFile], texts: dict[str, str], split: str) -> list[str]:
    return [texts[e.path] for e in entries if e.split == split]
