"""Where distillation keeps its files for a workspace, and where the promoted student lives.

``promoted_model_dir(workspace)`` is the contract with the server: ``protege distill`` writes
the student that passed the evaluation gate there (a plain Hugging Face model directory
with its tokenizer), and ``protege serve`` should load it for that workspace when it exists,
falling back to the shipped starter student otherwise. Everything lives in the
per-workspace cache directory the index uses, never inside the user's repository.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def workspace_dir(workspace: str | Path) -> Path:
    """The per-workspace cache directory (``$XDG_CACHE_HOME/protege/<name>-<hash>``), shared with the index."""
    try:
        from indexing.config import workspace_cache_dir
    except ImportError:  # indexing/ is optional for distillation; same formula
        resolved = str(Path(workspace).resolve())
        digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:16]
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "protege" / f"{Path(resolved).name or 'root'}-{digest}"
    return workspace_cache_dir(workspace)


def promoted_model_dir(workspace: str | Path) -> Path:
    """The promoted student of ``workspace``: what ``protege serve`` loads for it when present."""
    return workspace_dir(workspace) / "model"


def served_promoted_model(workspace: str | Path) -> Path | None:
    """The promoted student to serve, or None: ``model`` when it is complete, else ``model.prev``.

    ``promote`` renames the old ``model`` to ``model.prev`` and then the complete ``model.incoming``
    to ``model``; a crash between the two renames leaves only ``model.prev``, which is the old model
    whole. A half-copied ``model.incoming`` is never served. So a reader always gets the old or the
    new model, never half of one, and never silently drops back to the starter.
    """
    dest = promoted_model_dir(workspace)
    for candidate in (dest, dest.with_name(dest.name + ".prev")):
        if (candidate / "config.json").exists() and any(candidate.glob("*.safetensors")):
            return candidate
    return None


def datasets_dir(workspace: str | Path) -> Path:
    return workspace_dir(workspace) / "distill" / "datasets"


def runs_dir(workspace: str | Path) -> Path:
    return workspace_dir(workspace) / "distill" / "runs"


def targets_cache(workspace: str | Path) -> Path:
    return workspace_dir(workspace) / "distill" / "targets.sqlite"
