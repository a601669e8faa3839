"""The shipped starter models (``student/`` is served by default, ``teacher/`` distils it) and their paths."""

from __future__ import annotations

from pathlib import Path

STARTER_DIR = Path(__file__).resolve().parent
STUDENT_DIR = STARTER_DIR / "student"
TEACHER_DIR = STARTER_DIR / "teacher"


def default_model_dir(role: str = "student") -> Path:
    """Directory of the shipped starter ``role`` ("student" or "teacher"); raises a one-sentence error if absent."""
    if role not in ("student", "teacher"):
        raise ValueError(f"unknown starter model {role!r}; use 'student' or 'teacher'")
    d = STARTER_DIR / role
    if not (d / "config.json").exists():
        raise FileNotFoundError(
            f"the starter {role} is not installed at {d}; reinstall protege or run "
            "`protege pretrain --recipe recipes/starter-cpu.toml` to train it"
        )
    return d
