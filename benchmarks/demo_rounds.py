"""One federated round with 3, 8 and 16 sites, end to end, in Flower's simulation engine.

Every site is a virtual SuperNode running the real ClientApp (DP-SGD, CKKS,
ledger, egress log) on its own small synthetic centre (4 patients at 24^3, tiny
networks: the cost here is the federation's, not the training's); the ServerApp
adds the ciphertexts.  For each consortium size: the wall time of the whole run
(Ray start-up, one round of both models, the final evaluation and every site's
export) and of the round itself as the server's summary dates it, the sites that
contributed, and each site's epsilon spent.  A fresh key ceremony and fresh site
states for each size.

    .venv/bin/python benchmarks/demo_rounds.py [--sites 3 8 16]

Saves benchmarks/results/demo_rounds.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

FEDERATION = {"run_name": "demo-rounds", "seed": 1, "rounds": 1, "batch_size": 2, "min_sites": 3,
              "reply_timeout_s": 1800, "data": {"grid": 24, "val_fraction": 0.25, "test_fraction": 0.0},
              "model": {"response_channels": [4, 8], "evolution_channels": [4, 8], "norm_groups": 2},
              "evaluation": {"noise_multiplier": 20.0}, "he": {"max_patients": 64, "max_sites": 16}}
EPSILON = 8.0


def cohort(folder: Path, sites: int) -> Path:
    """``sites`` small centres, scanners and treatments varying as in the test cohort."""
    from flame_private.cohort.writer import synthesise_cohort
    from flame_private.config import CohortConfig

    mixes = [{"photon": 0.6, "proton": 0.4}, {"photon": 0.5, "proton": 0.2, "carbon": 0.3}, {"photon": 1.0}]
    cfg = CohortConfig(name="demo-rounds", seed=3, grid=24, sites=[
        {"site_id": f"site-{i:02d}", "n_patients": 4, "treatment_mix": mixes[i % 3]} for i in range(sites)])
    synthesise_cohort(cfg, folder, workers=2)
    return folder


def one_size(root: Path, cohort_dir: Path, n_sites: int) -> dict:
    from flame_private.config import FederationConfig, SiteConfig, load_config
    from flame_private.federation.simulation import simulate_federation
    from flame_private.privacy import open_site_budget
    from flame_private.study.arms import make_keys, write_cell
    from flame_private.study.data import StudyData

    fed = FederationConfig.model_validate(FEDERATION)
    keys = make_keys(fed, root / f"keys-{n_sites}")
    data = StudyData.load(cohort_dir, fed)
    sites = data.sites[:n_sites]
    fed_yaml, site_yamls = write_cell(data, fed, sites, EPSILON, keys, root / f"cell-{n_sites}")
    t0 = time.perf_counter()
    summary = simulate_federation(fed_yaml, list(site_yamls.values()), keys.params, root / f"cell-{n_sites}" / "run",
                                  f"demo-rounds-{n_sites}")
    wall = time.perf_counter() - t0
    spent = [open_site_budget(load_config(p, SiteConfig)).spent() for p in site_yamls.values()]
    rounds = [{"task": r["task"], "contributors": len(r.get("contributors", [])),
               "declined": len(r.get("declined", [])), "refused": r.get("refused")} for r in summary["rounds"]]
    return {"sites": n_sites, "run_seconds": round(wall, 1), "rounds": rounds,
            "exports": summary["exports"], "epsilon_spent_max": round(max(spent), 3),
            "epsilon_spent_min": round(min(spent), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, nargs="+", default=[3, 8, 16])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        cohort_dir = cohort(root / "cohort", max(args.sites))
        synth = time.perf_counter() - t
        for n in args.sites:
            row = one_size(root, cohort_dir, n)
            rows.append(row)
            print(f"{n:3d} sites: {row['run_seconds']:6.1f} s for the run (one round of both models, final "
                  f"evaluation, exports); epsilon spent {row['epsilon_spent_min']}-{row['epsilon_spent_max']}; "
                  f"contributors {[r['contributors'] for r in row['rounds']]}", flush=True)
    path = save("demo_rounds", {"epsilon_per_site": EPSILON, "patients_per_site": 4, "grid": 24,
                                "cohort_seconds": round(synth, 1), "federation": FEDERATION, "rows": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
