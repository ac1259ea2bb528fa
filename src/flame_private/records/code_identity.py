"""The identity of the installed code: the ``app_hash`` a message carries when Flower's FAB hash is absent.

A DPO compares it with the approved release's (``flame audit``, "code identity"),
so it is a pure function of the package's source files, recomputable anywhere.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path


def _package_root() -> Path:
    import flame_private

    return Path(flame_private.__file__).resolve().parent


def app_identity(root: Path | str | None = None) -> str:
    """sha256 (hex) identifying the installed ``flame_private`` code; the ``app_hash`` when Flower's FAB hash is absent.

    For every ``.py`` file under the package directory, in order of relative POSIX
    path: the path (UTF-8), a NUL byte, the file size as 8 bytes big-endian, and the
    file's bytes.  Compiled files, data files and ``__pycache__`` are not included.
    Recompute it with ``python -c "from flame_private.records.code_identity import
    app_identity; print(app_identity())"`` on the approved installation.
    """
    if root is None:
        return _installed_identity()
    return _identity_of(Path(root))


@lru_cache(maxsize=1)
def _installed_identity() -> str:
    return _identity_of(_package_root())


def _identity_of(root: Path) -> str:
    h = hashlib.sha256()
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
                   if p.is_file() and "__pycache__" not in p.parts)
    for rel, path in files:
        data = path.read_bytes()
        h.update(rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()
