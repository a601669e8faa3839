"""Walking a workspace: .gitignore files, the deny-list, bad files skipped with a reason, secrets masked."""

from __future__ import annotations

from pathlib import Path

from indexing.secrets import MASK, redact_secrets
from indexing.walk import is_denied, read_text_checked, walk_workspace

AWS_KEY = "AKIAQWERTYUIOPASDFGH"
GH_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx9fake0key0material\nQWERTY\n-----END RSA PRIVATE KEY-----"


def _write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_gitignore_and_deny_list(tmp_path: Path) -> None:
    _write(tmp_path, ".gitignore", "build/\n*.log\n!keep.log\n")
    _write(tmp_path, "src/app.py", "x = 1\n")
    _write(tmp_path, "src/.gitignore", "generated_*.py\n")
    _write(tmp_path, "src/generated_api.py", "y = 2\n")
    _write(tmp_path, "build/out.py", "z = 3\n")
    _write(tmp_path, "debug.log", "noise\n")
    _write(tmp_path, "keep.log", "kept\n")
    for rel in [".env", ".env.production", "certs/server.pem", "deploy/id_rsa", "secrets.yaml", "config/app.key",
                ".npmrc", "package-lock.json", "static/app.min.js", "node_modules/lib/index.js", ".git/config",
                "img/logo.png", "__pycache__/a.cpython-311.pyc", "credentials.json", ".aws/credentials"]:
        _write(tmp_path, rel, "AWS_SECRET=whatever\n")
    got = [e.rel for e in walk_workspace(tmp_path)]
    assert got == [".gitignore", "keep.log", "src/.gitignore", "src/app.py"]
    assert is_denied(tmp_path, "src/generated_api.py") and is_denied(tmp_path, "build/out.py")
    assert is_denied(tmp_path, ".env") and not is_denied(tmp_path, "src/app.py")
    assert [e.rel for e in walk_workspace(tmp_path, ["src/"])] == [".gitignore", "keep.log"]


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside, "secret.py", "TOKEN = 1\n")
    ws = tmp_path / "ws"
    _write(ws, "a.py", "a = 1\n")
    (ws / "link").symlink_to(outside, target_is_directory=True)
    (ws / "file_link.py").symlink_to(outside / "secret.py")
    assert [e.rel for e in walk_workspace(ws)] == ["a.py"]


def test_bad_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    binary = _write(tmp_path, "blob.dat", b"\x7fELF\x00\x01\x02" + bytes(range(256)))
    latin = _write(tmp_path, "latin.txt", "caf\xe9 cr\xe8me".encode("latin-1"))
    huge = tmp_path / "one_line.js"
    with huge.open("wb") as f:  # a 50 MB single line
        for _ in range(50):
            f.write(b"a" * 1_000_000)
    minified = _write(tmp_path, "bundle.js", "var a=1;" * 1000)
    good = _write(tmp_path, "ok.py", "print('ok')\n")

    def check(path: Path, max_bytes: int = 1_000_000) -> tuple[str | None, str]:
        return read_text_checked(path, path.stat().st_size, max_bytes, 4000)

    assert check(binary) == (None, "binary (NUL bytes)")
    text, reason = check(latin)
    assert text is None and reason.startswith("invalid UTF-8")
    text, reason = check(huge)
    assert text is None and "larger than max_file_bytes" in reason
    # Even when the size limit is lifted, the single 50 MB line is refused as minified/generated.
    text, reason = check(huge, max_bytes=10**9)
    assert text is None and "longer than 4000 characters" in reason
    assert check(minified)[0] is None
    assert check(good) == ("print('ok')\n", "")


def test_secrets_are_masked_and_line_numbers_kept() -> None:
    text = (f"import os\nAWS_ACCESS_KEY_ID = '{AWS_KEY}'\nTOKEN = \"{GH_TOKEN}\"\nKEY = '''{PRIVATE_KEY}'''\n"
            "api_key = \"9f8e7d6c5b4a3f2e1d0c9b8a7f6e\"\nname = 'not a secret at all'\nprint(os.getcwd())\n")
    clean, findings = redact_secrets(text)
    for secret in (AWS_KEY, GH_TOKEN, "MIIEowIBAAKCAQEAx9fake0key0material", "9f8e7d6c5b4a3f2e1d0c9b8a7f6e"):
        assert secret not in clean
    assert clean.count("\n") == text.count("\n")
    assert clean.split("\n")[-2] == "print(os.getcwd())"
    assert "not a secret at all" in clean
    kinds = {f.kind for f in findings}
    assert {"AWS access key id", "GitHub token", "private key block", "hard-coded credential"} <= kinds
    assert [f.line for f in findings if f.kind == "AWS access key id"] == [1]
    assert clean.count(MASK) == 4


def test_ordinary_code_is_not_masked() -> None:
    text = "def password_strength(password):\n    return len(password) > 8\nTOKEN_URL = 'https://example.com/token'\n"
    assert redact_secrets(text) == (text, [])
