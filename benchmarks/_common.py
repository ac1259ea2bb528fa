"""Shared helpers for benchmark scripts: machine description and result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import numpy

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": numpy.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    return info


def save(name: str, figures: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` with the machine and a timestamp."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
               "figures": figures}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def add_study_args(ap: argparse.ArgumentParser) -> None:
    """``--cohort`` (the simulated study cohort's folder) and ``--config`` (its cohort YAML), as every study
    benchmark takes them."""
    ap.add_argument("--cohort", type=Path, default=ROOT / "runs" / "study" / "cohort")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cohort" / "study.yaml")


def cohort_identity(args: argparse.Namespace) -> dict[str, str]:
    """Which cohort the figures come from: its config, its folder, and a fingerprint of its ``cohort.json``
    (a resynthesised cohort in the same folder gets another fingerprint)."""
    import hashlib

    def shown(path: Path) -> str:  # as the docs spell it (runs/...), whichever checkout holds the data
        path = path.resolve()
        if path.is_relative_to(ROOT):
            return str(path.relative_to(ROOT))
        parts = path.parts
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("runs"):]) if "runs" in parts else path.name

    manifest = args.cohort / "cohort.json"
    return {"cohort": shown(args.config), "cohort_dir": shown(args.cohort),
            "cohort_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else ""}


def study_splits(cohort_dir: Path, cohort_cfg: Any, data_config: Any) -> dict[str, Any]:
    """Each site's train/val/test split of a flame-layout cohort, by site id, loaded once."""
    from flame_private.data.checks import load_site
    from flame_private.data.splits import split_records

    return {s.site_id: split_records(load_site(cohort_dir / s.site_id, "flame", s.site_id).records, data_config)
            for s in cohort_cfg.sites}


def simulate_patient(cfg: Any, site_index: int, patient_index: int) -> tuple[Any, str, Any, Any]:
    """One patient drawn and simulated as ``flame cohort synth`` does (same random stream), in memory:
    (patient, resection, course under every modality, anatomy)."""
    import numpy as np

    from flame_private.cohort.anatomy import load_anatomy
    from flame_private.cohort.patient import choose_resection, depth_map, draw_patient
    from flame_private.cohort.simulate import simulate_course

    site = cfg.sites[site_index]
    anat = load_anatomy(cfg.grid)
    rng = np.random.default_rng([cfg.seed, site_index, patient_index])
    p = draw_patient(rng, f"{site.site_id}-{patient_index:03d}", anat, depth_map(anat), site, cfg)
    res = choose_resection(p, site)
    return p, res, simulate_course(p, res, anat, cfg), anat
