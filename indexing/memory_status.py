"""``protege status`` for saved repository memories, read without numpy (the CLI must start fast).

A memory is an ``.npz`` (a zip of ``.npy`` members); its ``meta`` member is a uint8 array holding JSON.
"""

from __future__ import annotations

import ast
import json
import struct
import zipfile
from pathlib import Path
from typing import Any


def npy_bytes(path: Path, name: str) -> bytes:
    """The raw data of a 1-D uint8 array ``name`` in the ``.npz`` at ``path``."""
    with zipfile.ZipFile(path) as z, z.open(f"{name}.npy") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise ValueError(f"{name}.npy is not a .npy member")
        major = fh.read(2)[0]
        (size,) = struct.unpack("<H" if major == 1 else "<I", fh.read(2 if major == 1 else 4))
        header = ast.literal_eval(fh.read(size).decode("latin-1"))
        if header.get("descr") not in ("|u1", "<u1", "u1") or header.get("fortran_order"):
            raise ValueError(f"{name}.npy holds {header.get('descr')}, not uint8 bytes")
        return fh.read()


def saved_status(cache_dir: Path) -> list[dict[str, Any]]:
    """What ``protege status`` says of the memories saved in an index cache dir (without loading them)."""
    out: list[dict[str, Any]] = []
    for path in sorted((cache_dir / "memory").glob("*/memory.npz")):
        try:
            meta = json.loads(npy_bytes(path, "meta").decode("utf-8"))
            out.append({"tokenizer": meta.get("tokenizer"), "files": len(meta.get("files", [])),
                        "tokens": meta.get("tokens"), "build_s": meta.get("build_s"), "mb": meta.get("mb"),
                        "built_at": meta.get("built_at"), "path": str(path)})
        except Exception as exc:  # noqa: BLE001 - status must always answer
            out.append({"path": str(path), "error": f"unreadable ({exc}); the server rebuilds it"})
    return out
