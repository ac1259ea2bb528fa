"""One reader per public dataset layout, all producing ``CaseRecord`` lists.

Adding a layout means adding a module with a ``read_<layout>(root, site_id)``
function and registering it in ``READERS`` (and ``config.Layout``); nothing
downstream changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from flame_private.config import Layout
from flame_private.data.errors import DataError, Problem
from flame_private.data.layouts import brats2021, brats2023, flame, lumiere, upenn
from flame_private.data.layouts.brats2021 import read_brats2021
from flame_private.data.layouts.brats2023 import read_brats2023
from flame_private.data.layouts.flame import manifest_site_id, read_flame
from flame_private.data.layouts.lumiere import read_lumiere
from flame_private.data.layouts.upenn import read_upenn
from flame_private.data.records import CaseRecord

log = logging.getLogger(__name__)


class Reader(Protocol):
    """Signature every layout reader implements."""

    def __call__(self, root: Path, site_id: str, problems: list[Problem] | None = None) -> list[CaseRecord]: ...


READERS: dict[Layout, Reader] = {
    "flame": read_flame,
    "brats2021": read_brats2021,
    "brats2023": read_brats2023,
    "lumiere": read_lumiere,
    "upenn": read_upenn,
}

LABEL_MAPS: dict[Layout, dict[int, int]] = {
    "flame": flame.LABEL_MAP,
    "brats2021": brats2021.LABEL_MAP,
    "brats2023": brats2023.LABEL_MAP,
    "lumiere": lumiere.DEFAULT_LABEL_MAP,
    "upenn": upenn.LABEL_MAP,
}
"""Each layout's fixed (or default) source -> canonical label map."""

LAYOUT_EXPECTS: dict[Layout, str] = {
    "flame": f"patients listed in {flame.MANIFEST} (image paths relative to the folder)",
    "brats2021": "case folders BraTS2021_<number>/ holding BraTS2021_<number>_{t1,t1ce,t2,flair}.nii.gz",
    "brats2023": "case folders BraTS-GLI-<patient>-<timepoint>/ holding <case>-{t1n,t1c,t2w,t2f}.nii.gz",
    "lumiere": "Imaging/Patient-<number>/week-<...>/ study folders holding {T1,CT1,T2,FLAIR}.nii.gz",
    "upenn": f"{upenn.STRUCTURAL}/UPENN-GBM-<number>_11/ (baseline) and _21/ (follow-up) folders",
}
"""What each layout's reader looks for, said when a folder holds no case of it."""


def detect_layout(root: Path) -> Layout:
    """Guess a site folder's layout from its file names; DataError when nothing matches."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    if (root / flame.MANIFEST).is_file():
        return "flame"
    if (root / upenn.STRUCTURAL).is_dir():
        return "upenn"
    if brats2021.case_dirs(root):
        return "brats2021"
    if brats2023.case_dirs(root):
        return "brats2023"
    images = lumiere.imaging_dir(root)
    if any(p.is_dir() and lumiere.PATIENT_DIR.match(p.name) for p in images.iterdir()):
        return "lumiere"
    raise DataError(
        f"{root}: cannot tell the dataset layout (no manifest.json, BraTS case folders, "
        f"LUMIERE Imaging/Patient-* or UPENN images_structural/); pass the layout explicitly "
        f"(one of {', '.join(READERS)})"
    )


def default_site_id(root: Path, layout: Layout) -> str:
    """The manifest's site_id for the flame layout, else the folder name."""
    root = Path(root)
    if layout == "flame":
        declared = manifest_site_id(root)
        if declared:
            return declared
    return root.resolve().name


def read_site(
    root: Path, layout: Layout | None = None, site_id: str | None = None, problems: list[Problem] | None = None
) -> list[CaseRecord]:
    """Read a site folder with the given (or detected) layout's reader."""
    layout = layout or detect_layout(root)
    if layout not in READERS:
        raise DataError(f"unknown layout {layout!r} (expected one of {', '.join(READERS)})")
    return READERS[layout](Path(root), site_id or default_site_id(root, layout), problems)


__all__ = [
    "LABEL_MAPS",
    "LAYOUT_EXPECTS",
    "READERS",
    "Reader",
    "default_site_id",
    "detect_layout",
    "read_brats2021",
    "read_brats2023",
    "read_flame",
    "read_lumiere",
    "read_site",
    "read_upenn",
]
