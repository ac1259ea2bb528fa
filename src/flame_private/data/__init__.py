"""The data layer: read any supported layout into case records, check them, split them.

Torch-dependent parts (``transforms``, ``datasets``) are imported from their
modules, so ``flame data check`` stays quick to start.
"""

from flame_private.data.checks import (
    CaseCheck,
    LoadedSite,
    SiteCheckReport,
    SkippedCase,
    check_site,
    load_site,
    render_check_table,
)
from flame_private.data.errors import DataError, NiftiError, Problem
from flame_private.data.layouts import READERS, detect_layout, read_site
from flame_private.data.records import CaseRecord, Covariates, ImageFiles, TimepointRecord
from flame_private.data.splits import Splits, assign_split, split_patients, split_records

__all__ = [
    "READERS",
    "CaseCheck",
    "CaseRecord",
    "Covariates",
    "DataError",
    "ImageFiles",
    "LoadedSite",
    "NiftiError",
    "Problem",
    "SiteCheckReport",
    "SkippedCase",
    "Splits",
    "TimepointRecord",
    "assign_split",
    "check_site",
    "detect_layout",
    "load_site",
    "read_site",
    "render_check_table",
    "split_patients",
    "split_records",
]
