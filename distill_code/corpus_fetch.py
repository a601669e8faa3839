"""``pypi:NAME==VERSION`` corpus roots: a package's wheel fetched once from the package index, its Python
sources unpacked into the corpus cache, its version and license read from the wheel's own metadata.

Only wheels (``--only-binary=:all:``, ``--no-deps``): nothing is built or installed, and no code from the
package runs. A wheel already in ``<cache>/wheels`` is used as is, so a fetched corpus rebuilds offline.
"""

from __future__ import annotations

import email.parser
import logging
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from distill_code.corpus import CorpusError

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_wheel(wheels: Path, name: str, version: str) -> Path | None:
    for w in sorted(wheels.glob("*.whl")):
        parts = w.name.split("-")
        if len(parts) >= 2 and _norm(parts[0]) == _norm(name) and parts[1] == version:
            return w
    return None


def fetch_wheel(name: str, version: str, cache: Path) -> Path:
    """The wheel of ``name==version`` in ``<cache>/wheels``, downloaded (no dependencies) if missing."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = _find_wheel(wheels, name, version)
    if found:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels),
           f"{name}=={version}"]
    log.info("fetching %s==%s for the corpus", name, version)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _find_wheel(wheels, name, version)
    if proc.returncode != 0 or found is None:
        raise CorpusError(f"could not fetch the wheel of {name}=={version} from the package index "
                          f"({proc.stderr.strip()[-300:] or 'no wheel'}); check the version or put the wheel "
                          f"in {wheels}")
    return found


def _license(meta: email.message.Message) -> str:
    expr = meta.get("License-Expression")
    if expr:
        return str(expr)
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return ", ".join(classifiers)
    text = (meta.get("License") or "").strip().splitlines()
    return text[0][:80] if text else "see package metadata"


def fetched_root(spec: str, cache: Path) -> tuple[Path, dict[str, str]]:
    """(directory of unpacked sources, source record) for ``NAME==VERSION``, fetching it when needed."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise CorpusError(f"corpus root 'pypi:{spec}' must pin one version, like 'pypi:flask==3.1.3'")
    name, version = m.groups()
    src = cache / "src" / f"{_norm(name)}-{version}"
    done = src / ".unpacked"
    if not done.exists():
        wheel = fetch_wheel(name, version, cache)
        src.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if member.endswith(".py") or member.endswith(".dist-info/METADATA"):
                    target = (src / member).resolve()
                    if src.resolve() not in target.parents:
                        raise CorpusError(f"wheel {wheel.name} has an unsafe member path {member!r}")
                    z.extract(member, src)
        done.write_text(wheel.name + "\n")
    metas = sorted(src.glob("*.dist-info/METADATA"))
    lic = "see package metadata"
    if metas:
        meta = email.parser.Parser().parsestr(metas[0].read_text(encoding="utf-8", errors="replace"),
                                              headersonly=True)
        lic = _license(meta)
    return src, {"name": f"{name} {version}", "license": lic[:120]}
