"""How long the synthetic cohort takes: the reference 4-site x 40-patient cohort at 64^3.

Usage: python benchmarks/cohort_speed.py [--config configs/cohort/default.yaml] [--workers N]
Prints the figures and saves them to benchmarks/results/cohort_speed.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import save

from flame_private.cohort.anatomy import load_anatomy
from flame_private.cohort.writer import synthesise_cohort
from flame_private.config import CohortConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, default=ROOT / "configs/cohort/default.yaml")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    cfg = load_config(args.config, CohortConfig)
    n = sum(s.n_patients for s in cfg.sites)
    t0 = time.perf_counter()
    load_anatomy(cfg.grid)
    t_anat = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="flame-bench-"))
    try:
        t0 = time.perf_counter()
        synthesise_cohort(cfg, tmp / "cohort", workers=args.workers)
        wall = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (tmp / "cohort").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "grid": cfg.grid,
        "sites": len(cfg.sites),
        "patients": n,
        "workers": args.workers,
        "anatomy_load_s": round(t_anat, 2),
        "wall_s": round(wall, 1),
        "per_patient_core_s": round(wall * args.workers / n, 2),
        "output_mb": round(size / 1e6, 1),
    }
    for k, v in figures.items():
        print(f"{k:>20}: {v}")
    print(f"saved {save('cohort_speed', figures)}")


if __name__ == "__main__":
    main()
