"""Render a document to HTML or PDF and write it atomically: a reader never finds half a report.

The bytes are rendered in memory first, written to a temporary file beside the
target, flushed to disk, and only then renamed over it (``os.replace``).  If
anything fails, the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from flame_private.reports.blocks import Document
from flame_private.reports.errors import ReportError

log = logging.getLogger(__name__)

Format = Literal["html", "pdf"]
FORMATS: tuple[Format, ...] = ("html", "pdf")


def format_for(path: Path, given: str | None) -> Format:
    """The format asked for, or the one the file name implies (``.pdf``, ``.html``/``.htm``)."""
    if given is not None:
        if given not in FORMATS:
            raise ReportError(f"unknown format {given!r}; expected html or pdf")
        return given
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return "pdf"
    if suffix in (".html", ".htm"):
        return "html"
    raise ReportError(f"{path}: cannot tell the format from the file name; pass --format html or --format pdf")


def render(doc: Document, fmt: Format) -> bytes:
    if fmt == "pdf":
        from flame_private.reports.pdf import render_pdf

        return render_pdf(doc)
    from flame_private.reports.html import render_html

    return render_html(doc)


def write_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``; parents are created."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ReportError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    log.info("wrote %s (%d bytes)", path, len(data))
    return path


def write_document(doc: Document, path: Path, fmt: Format | None = None) -> Path:
    """Render ``doc`` (format from ``fmt`` or the file name) and write it atomically."""
    return write_atomically(path, render(doc, format_for(Path(path), fmt)))
