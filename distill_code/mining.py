"""Prompt mining: fill-in-the-middle examples at syntactic boundaries and explanation pairs from a repository.

Tree-sitter finds spans worth completing (function bodies, blocks, statements, call
arguments, line remainders); docstrings and comments become (code -> explanation) pairs.
Examples are deduplicated, split into train / held-out *by file* (files touched by the most
recent git commits are held out first, so evaluation looks like "the code written next"),
and written as a versioned dataset: ``<root>/<version>/{train,heldout}.jsonl`` plus a
``manifest.json``; the version is a hash of the content, so re-mining an unchanged
repository yields the same version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tree_sitter import Node
from tree_sitter_language_pack import get_parser

log = logging.getLogger(__name__)

MINER_VERSION = 1
EXTENSIONS = {".py": "python", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript",
              ".go": "go", ".rs": "rust", ".java": "java"}
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".tox", ".mypy_cache",
             ".ruff_cache", ".pytest_cache", "site-packages"}
BODY_PARENTS = {"function_definition", "function_declaration", "method_definition", "method_declaration",
                "function_item", "arrow_function", "constructor_declaration"}
BLOCK_TYPES = {"block", "statement_block", "compound_statement"}
ARG_TYPES = {"argument_list", "arguments"}
COMMENT_TYPES = {"comment", "line_comment", "block_comment"}
KINDS = ("body", "block", "statement", "arguments", "line_remainder")


class MiningError(RuntimeError):
    """The repository cannot be mined; the message says why."""


@dataclass
class MiningConfig:
    """What to mine and how much; every field has a working default."""

    max_prefix_chars: int = 3000
    max_suffix_chars: int = 1000
    max_middle_lines: int = 12
    max_middle_chars: int = 400
    max_per_file: int = 60
    max_file_bytes: int = 300_000
    heldout_fraction: float = 0.1
    min_heldout_files: int = 1
    split: str = "auto"  # "auto": recent commits in git repositories, else by file hash; "hash"; "commits"
    seed: int = 0
    use_index: bool = True  # cross-file context from indexing/ when an index exists
    explain_pairs: bool = True


@dataclass
class Example:
    """One mined example: a FIM completion (task "fim") or an explanation pair (task "explain")."""

    id: str
    task: str
    kind: str
    path: str
    language: str
    prefix: str = ""
    middle: str = ""
    suffix: str = ""
    context: str = ""
    split: str = "train"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @staticmethod
    def from_json(line: str) -> Example:
        return Example(**json.loads(line))


@dataclass
class Dataset:
    """A mined dataset loaded from disk."""

    root: Path
    version: str
    manifest: dict[str, Any]
    train: list[Example] = field(default_factory=list)
    heldout: list[Example] = field(default_factory=list)

    def fim(self, split: str) -> list[Example]:
        return self.examples(split, ("fim",))

    def examples(self, split: str, tasks: tuple[str, ...] = ("fim", "explain")) -> list[Example]:
        """Examples of ``split`` whose task is in ``tasks``; all of them are FIM-encodable."""
        return [e for e in (self.train if split == "train" else self.heldout) if e.task in tasks]


# ------------------------------------------------------------------------ repository files


def list_source_files(repo: Path, max_file_bytes: int = 300_000) -> list[str]:
    """Repository-relative source files in a stable order, honouring .gitignore when indexing/ is present."""
    rels: list[str] = []
    try:
        from indexing.walk import walk_workspace
    except ImportError:
        walk_workspace = None  # type: ignore[assignment]
    if walk_workspace is not None:
        for entry in walk_workspace(repo):
            if Path(entry.rel).suffix in EXTENSIONS and entry.size <= max_file_bytes:
                rels.append(entry.rel)
        return sorted(rels)
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if p.suffix in EXTENSIONS and p.stat().st_size <= max_file_bytes:
                rels.append(p.relative_to(repo).as_posix())
    return sorted(rels)


def recent_commit_files(repo: Path, max_commits: int = 200) -> list[list[str]]:
    """Files changed by each of the most recent commits, newest first; [] outside a git repository."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "log", f"-n{max_commits}", "--name-only", "--format=%x00"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    prefix = _git_prefix(repo)
    commits = []
    for block in out.split("\x00"):
        files = [ln.strip() for ln in block.splitlines() if ln.strip()]
        # git prints paths relative to the top level; keep those under `repo`, made relative to it.
        files = [f[len(prefix):] for f in files if f.startswith(prefix)]
        if files:
            commits.append(files)
    return commits


def _git_prefix(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-prefix"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_head(repo: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def split_files(repo: Path, files: list[str], cfg: MiningConfig) -> tuple[set[str], str]:
    """Choose held-out files: those of the most recent commits first (git), topped up by a stable hash order."""
    want = max(cfg.min_heldout_files, round(cfg.heldout_fraction * len(files)))
    want = min(want, max(len(files) - 1, 0))
    held: set[str] = set()
    reason = "hash"
    known = set(files)
    if cfg.split in ("auto", "commits"):
        for changed in recent_commit_files(repo):
            for f in changed:
                if f in known and len(held) < want:
                    held.add(f)
            if len(held) >= want:
                break
        if held:
            reason = "recent-commits"
        elif cfg.split == "commits":
            raise MiningError(f"{repo} has no git history touching its source files; use split = \"hash\"")
    if len(held) < want:
        by_hash = sorted(files, key=lambda f: hashlib.sha256(f"{cfg.seed}:{f}".encode()).hexdigest())
        for f in by_hash:
            if len(held) >= want:
                break
            held.add(f)
        reason = reason if reason == "hash" else reason + "+hash"
    return held, reason


# ---------------------------------------------------------------------------- span finding


def _walk(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _candidate_spans(root: Node, src: bytes) -> Iterator[tuple[str, int, int]]:
    """(kind, start_byte, end_byte) of every span worth completing."""
    for n in _walk(root):
        t = n.type
        if n.has_error:
            continue
        if t in BLOCK_TYPES and n.parent is not None:
            kind = "body" if n.parent.type in BODY_PARENTS else "block"
            start = n.start_byte
            # Braced blocks: complete the inside, keep the braces in prefix / suffix.
            if src[start:start + 1] == b"{":
                start, end = start + 1, n.end_byte - 1
            else:
                end = n.end_byte
            yield kind, start, end
        elif t in ARG_TYPES and n.end_byte - n.start_byte > 2:
            yield "arguments", n.start_byte + 1, n.end_byte - 1
        elif (t.endswith("statement") or t in ("assignment", "expression_statement")) and \
                t not in BLOCK_TYPES and b"\n" not in src[n.start_byte:n.end_byte]:
            yield "statement", n.start_byte, n.end_byte
            # Line remainder: split after one of the statement's leaves, as a user mid-line would.
            leaves = [c for c in _walk(n) if c.child_count == 0 and c.end_byte < n.end_byte]
            if leaves:
                cut = leaves[len(leaves) // 2].end_byte
                yield "line_remainder", cut, n.end_byte


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _explain_pairs(root: Node, src: bytes, max_lines: int = 60) -> Iterator[tuple[str, str, str, str]]:
    """(kind, prefix, middle, suffix) explanation examples in the layout the server's explain prompt uses.

    Docstrings: the definition's header, then the indented opening quotes, as the prefix; the rest of
    the body (docstring left out) as the suffix. Comments: the indented ``# `` as the prefix and the
    code below it as the suffix. See ``server.explain_summary.build_prompt``.
    """
    lines = src.decode("utf-8", "replace").split("\n")
    for n in _walk(root):
        if n.type in ("function_definition", "class_definition"):
            body = n.child_by_field_name("body")
            if body is None or not body.named_child_count:
                continue
            doc = body.named_children[0]
            # Grammar versions differ: the docstring is a bare string or wrapped in a statement.
            if doc.type == "expression_statement" and doc.named_child_count:
                doc = doc.named_children[0]
            if doc.type != "string":
                continue
            first, body_line, doc_end, last = n.start_point[0], doc.start_point[0], doc.end_point[0], n.end_point[0]
            text = "".join(src[c.start_byte:c.end_byte].decode("utf-8", "replace")
                           for c in doc.children if c.type == "string_content")
            if body_line <= first or last - first > max_lines or len(text.strip()) < 12:
                continue
            prefix = "\n".join(lines[first:body_line]) + "\n" + _indent(lines[body_line]) + '"""'
            suffix = '"""\n' + "\n".join(lines[doc_end + 1:last + 1]) + "\n"
            yield "docstring", prefix, text, suffix
        elif n.type in COMMENT_TYPES and n.next_named_sibling is not None:
            nxt = n.next_named_sibling
            raw = src[n.start_byte:n.end_byte].decode("utf-8", "replace")
            if not raw.startswith(("#", "//")) or nxt.type in COMMENT_TYPES:
                continue
            text = raw.lstrip("#/").strip()
            start, end = nxt.start_point[0], nxt.end_point[0]
            # One-liners explained by a comment teach little; a comment right above a block does.
            if len(text) < 12 or start != n.end_point[0] + 1 or end == start or end - start > max_lines:
                continue
            marker = "#" if raw.startswith("#") else "//"
            yield "comment", f"{_indent(lines[start])}{marker} ", text, "\n" + "\n".join(lines[start:end + 1]) + "\n"


def _stable_id(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def mine_file(rel: str, text: str, cfg: MiningConfig) -> list[Example]:
    """FIM examples and explanation pairs of one file (deterministic for a given path and text)."""
    language = EXTENSIONS.get(Path(rel).suffix)
    if language is None:
        return []
    src = text.encode("utf-8")
    tree = get_parser(language).parse(src)  # type: ignore[arg-type]
    rng = random.Random(f"{cfg.seed}:{rel}")
    by_kind: dict[str, list[Example]] = {k: [] for k in KINDS}
    for kind, start, end in _candidate_spans(tree.root_node, src):
        raw = src[start:end]
        if kind in ("body", "block"):
            # The cursor sits after the indentation of the first line, as after pressing Enter;
            # trailing blank space (before a closing brace) stays in the suffix.
            start += len(raw) - len(raw.lstrip())
            end -= len(raw) - len(raw.rstrip())
        middle = src[start:end].decode("utf-8", "replace")
        if not middle.strip() or len(middle) > cfg.max_middle_chars or \
                middle.count("\n") >= cfg.max_middle_lines:
            continue
        prefix = src[:start].decode("utf-8", "replace")[-cfg.max_prefix_chars:]
        suffix = src[end:].decode("utf-8", "replace")[:cfg.max_suffix_chars]
        ex_id = _stable_id("fim", kind, prefix[-512:], middle, suffix[:256])
        by_kind[kind].append(Example(ex_id, "fim", kind, rel, language, prefix, middle, suffix))
    out: list[Example] = []
    # Balanced sample across kinds so long files do not drown everything in line remainders.
    quota = max(1, cfg.max_per_file // len(KINDS))
    for kind in KINDS:
        items = by_kind[kind]
        rng.shuffle(items)
        out.extend(items[:quota])
    if cfg.explain_pairs:
        pairs = []
        for kind, prefix, middle, suffix in _explain_pairs(tree.root_node, src):
            pairs.append(Example(_stable_id("explain", prefix, middle, suffix), "explain", kind, rel, language,
                                 prefix=prefix, middle=middle, suffix=suffix))
        rng.shuffle(pairs)
        out.extend(pairs[:quota])
    return out


def _dedup(examples: list[Example]) -> list[Example]:
    seen: set[str] = set()
    out = []
    for e in examples:
        if e.id not in seen:
            seen.add(e.id)
            out.append(e)
    return out


def _norm(s: str) -> str:
    return " ".join(s.split())


# --------------------------------------------------------------------------- whole repository


def _attach_context(repo: Path, examples: list[Example]) -> int:
    """Cross-file context from the repository index when indexing/ and a built index exist.

    Snippets from the example's own file are dropped: for a held-out example they would
    contain the answer. Returns how many examples got context.
    """
    try:
        from indexing.api import RepoIndex
    except ImportError:
        log.info("indexing.api is not available; mining without cross-file context")
        return 0
    from distill_code.fim import TEMPLATES

    template = TEMPLATES["protege"]
    try:
        index = RepoIndex.open(repo)
        if not index.status().get("files"):
            log.info("no repository index for %s yet (run `protege index`); mining without cross-file context",
                     repo)
            index.close()
            return 0
    except Exception as exc:  # a store problem must not stop mining: context is an extra
        log.info("repository index for %s unavailable (%s); mining without cross-file context", repo, exc)
        return 0
    n = 0
    try:
        for e in examples:
            if e.task != "fim":
                continue
            line = e.prefix.count("\n")
            character = len(e.prefix) - (e.prefix.rfind("\n") + 1)
            snippets = index.completion_context(e.path, e.prefix + e.suffix, line, character)
            blocks = [template.context_block(s.path, s.text) for s in snippets if s.path != e.path]
            e.context = "".join(blocks)
            n += bool(e.context)
    except Exception as exc:
        log.warning("cross-file context failed after %d examples (%s); the rest have none", n, exc)
    finally:
        index.close()
    return n


def mine_repository(repo: str | Path, cfg: MiningConfig | None = None) -> tuple[list[Example], dict[str, Any]]:
    """Mine all source files of ``repo``; returns deduplicated, split examples and a summary."""
    cfg = cfg or MiningConfig()
    root = Path(repo).resolve()
    if not root.is_dir():
        raise MiningError(f"repository {str(repo)!r} is not a directory; pass the path of a source checkout")
    files = list_source_files(root, cfg.max_file_bytes)
    if len(files) < 2:
        raise MiningError(f"found {len(files)} source file(s) in {root}; mining needs at least two to hold one out")
    held, reason = split_files(root, files, cfg)
    seen_files: set[str] = set()
    examples: list[Example] = []
    for rel in files:
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            log.warning("skipping %s: %s", rel, exc)
            continue
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen_files:  # vendored copies would leak across the split
            continue
        seen_files.add(digest)
        for e in mine_file(rel, text, cfg):
            e.split = "heldout" if rel in held else "train"
            examples.append(e)
    examples = _dedup(examples)
    # A train example whose completion also appears held out would leak the answer.
    held_middles = {_norm(e.middle) for e in examples if e.split == "heldout" and len(e.middle) > 20}
    before = len(examples)
    examples = [e for e in examples if e.split == "heldout" or _norm(e.middle) not in held_middles]
    with_ctx = _attach_context(root, examples) if cfg.use_index else 0
    summary = {
        "files": len(files), "heldout_files": sorted(held), "split_reason": reason,
        "examples": len(examples), "leak_filtered": before - len(examples), "with_context": with_ctx,
        "by_kind": {k: sum(e.kind == k for e in examples) for k in sorted({e.kind for e in examples})},
        "train": sum(e.split == "train" for e in examples), "heldout": sum(e.split == "heldout" for e in examples),
    }
    return examples, summary


def write_dataset(examples: list[Example], out_root: str | Path, repo: str | Path,
                  summary: dict[str, Any], cfg: MiningConfig) -> Dataset:
    """Write ``examples`` as ``<out_root>/<version>/`` (content-addressed) and point ``LATEST`` at it."""
    version = _stable_id(str(MINER_VERSION), *sorted(e.id + e.split + e.context for e in examples))[:12]
    root = Path(out_root)
    vdir = root / version
    tmp = root / f".{version}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for split in ("train", "heldout"):
        with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for e in examples:
                if e.split == split:
                    fh.write(e.to_json() + "\n")
    manifest = {"version": version, "miner_version": MINER_VERSION, "repo": str(Path(repo).resolve()),
                "git_head": git_head(Path(repo)), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "config": asdict(cfg), **summary}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if vdir.exists():  # same content already on disk: keep it, drop the fresh copy
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    else:
        os.replace(tmp, vdir)  # atomic: a crash never leaves a half-written version
    (root / "LATEST").write_text(version + "\n")
    return load_dataset(root, version)


def load_dataset(root: str | Path, version: str | None = None) -> Dataset:
    """Load a dataset version (default: the one ``LATEST`` names)."""
    base = Path(root)
    if version is None:
        latest = base / "LATEST"
        if not latest.exists():
            raise MiningError(f"no dataset under {base}; run `protege distill` (or mining) first")
        version = latest.read_text().strip()
    vdir = base / version
    if not (vdir / "manifest.json").exists():
        raise MiningError(f"dataset version {version!r} not found under {base}")
    ds = Dataset(vdir, version, json.loads((vdir / "manifest.json").read_text()))
    for split in ("train", "heldout"):
        with open(vdir / f"{split}.jsonl", encoding="utf-8") as fh:
            getattr(ds, split).extend(Example.from_json(ln) for ln in fh if ln.strip())
    return ds


def mine_to_disk(repo: str | Path, out_root: str | Path, cfg: MiningConfig | None = None) -> Dataset:
    """Mine ``repo`` and write the versioned dataset; the one call the CLI and the benchmark make."""
    cfg = cfg or MiningConfig()
    t0 = time.perf_counter()
    examples, summary = mine_repository(repo, cfg)
    summary["mining_seconds"] = round(time.perf_counter() - t0, 3)
    ds = write_dataset(examples, out_root, repo, summary, cfg)
    log.info("mined %d examples (%d held out) from %d files into %s", summary["examples"], summary["heldout"],
             summary["files"], ds.root)
    return ds
