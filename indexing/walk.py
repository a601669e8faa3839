"""Walk a workspace: honour .gitignore files, a deny-list for secrets and junk, and skip bad files with a reason."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

log = logging.getLogger(__name__)

# Directories that are never source: VCS metadata, caches, virtual environments, vendored packages.
DENY_DIRS = [
    ".git/", ".hg/", ".svn/", "node_modules/", "__pycache__/", ".venv/", "venv/", ".tox/", ".nox/",
    ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".idea/", ".gradle/", "*.egg-info/",
    ".ssh/", ".aws/", ".gnupg/", ".docker/", ".kube/",
]
# Secrets: such files are never read, whatever .gitignore says.
DENY_SECRETS = [
    ".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx",
    "*.crt", "*.cer", "*.der", "*.asc", "*.gpg", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    ".npmrc", ".pypirc", ".netrc", "_netrc", ".pgpass", ".htpasswd", ".git-credentials", "credentials",
    "credentials.*", "*.credentials", "*credentials.json", "secrets.*", "*.secret", "*.secrets", "*.tfstate",
    "*.tfstate.*", "*.tfvars", "service-account*.json",
]
# Junk: lock files, minified and generated code, binaries and data.
DENY_JUNK = [
    "*.lock", "package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "go.sum", "*.min.js", "*.min.css",
    "*.map", "*_pb2.py", "*_pb2_grpc.py", "*.pb.go", "*.generated.*", "*.pyc", "*.pyo", "*.so", "*.dylib",
    "*.dll", "*.exe", "*.o", "*.a", "*.class", "*.jar", "*.war", "*.whl", "*.zip", "*.tar", "*.gz", "*.tgz",
    "*.bz2", "*.xz", "*.7z", "*.rar", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.bmp", "*.ico", "*.webp",
    "*.svgz", "*.pdf", "*.woff", "*.woff2", "*.ttf", "*.otf", "*.eot", "*.mp3", "*.mp4", "*.wav", "*.mov",
    "*.avi", "*.db", "*.sqlite", "*.sqlite3", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.onnx",
    "*.npy", "*.npz", "*.pkl", "*.pickle", "*.parquet", "*.arrow", "*.h5", "*.DS_Store", "*.ipynb",
]
DEFAULT_DENY = DENY_DIRS + DENY_SECRETS + DENY_JUNK


@dataclass(frozen=True)
class WalkEntry:
    rel: str  # workspace-relative, POSIX separators
    path: Path
    size: int
    mtime_ns: int


def _basename_regex(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


# The default deny-list holds only basename globs: one combined regex per kind is ~100x cheaper than
# pathspec's pattern-by-pattern matching, and the walk is most of a no-change re-index.
_DENY_DIR_NAMES = _basename_regex([p.rstrip("/") for p in DEFAULT_DENY if p.endswith("/")])
_DENY_FILE_NAMES = _basename_regex([p for p in DEFAULT_DENY if not p.endswith("/")])


class DenySpec:
    """Deny-list plus every .gitignore found on the way down, each applied relative to its own directory."""

    def __init__(self, root: Path, extra: list[str] | None = None) -> None:
        self.root = root
        self.extra = pathspec.GitIgnoreSpec.from_lines(list(extra)) if extra else None
        self.gitignores: dict[str, pathspec.GitIgnoreSpec] = {}

    def load_gitignore(self, rel_dir: str) -> None:
        path = self.root / rel_dir / ".gitignore" if rel_dir else self.root / ".gitignore"
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return
        self.gitignores[rel_dir] = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        name = rel.rsplit("/", 1)[-1]
        # A file pattern like `.env` also excludes a directory of that name, as in gitignore.
        if _DENY_FILE_NAMES.match(name) or (is_dir and _DENY_DIR_NAMES.match(name)):
            return True
        if self.extra is not None and self.extra.match_file(probe):
            return True
        for base, spec in self.gitignores.items():
            if base == "":
                if spec.match_file(probe):
                    return True
            elif rel.startswith(base + "/") and spec.match_file(probe[len(base) + 1:]):
                return True
        return False


def walk_workspace(root: Path, extra_ignore: list[str] | None = None) -> Iterator[WalkEntry]:
    """Yield indexable regular files under ``root`` in a stable (sorted) order; symlinks are not followed."""
    root = root.resolve()
    spec = DenySpec(root, extra_ignore)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        spec.load_gitignore(rel_dir)
        abs_dir = root / rel_dir if rel_dir else root
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("skipping directory %s: %s", abs_dir, exc)
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if not spec.ignored(rel, True):
                    subdirs.append(rel)
            elif stat.S_ISREG(st.st_mode) and not spec.ignored(rel, False):
                yield WalkEntry(rel, Path(entry.path), st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))


def is_denied(root: Path, rel: str, extra_ignore: list[str] | None = None) -> bool:
    """Whether a single path (e.g. one saved in the editor) is excluded by the deny-list or a .gitignore."""
    root = root.resolve()
    spec = DenySpec(root, extra_ignore)
    parts = rel.split("/")
    spec.load_gitignore("")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if spec.ignored(prefix, True):
            return True
        spec.load_gitignore(prefix)
    return spec.ignored(rel, False)


def read_text_checked(path: Path, size: int, max_file_bytes: int, max_line_chars: int) -> tuple[str | None, str]:
    """Read a file as UTF-8 text, or return (None, reason) for binary, undecodable, huge or minified files."""
    if size > max_file_bytes:
        return None, f"larger than max_file_bytes ({size} > {max_file_bytes} bytes)"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if b"\x00" in data[:8192]:
        return None, "binary (NUL bytes)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte {exc.start}"
    if len(text) > max_line_chars and max((len(line) for line in text.split("\n")), default=0) > max_line_chars:
        return None, f"a line longer than {max_line_chars} characters (minified or generated)"
    return text, ""
