"""The four simulated attacks at full size: the figures of docs/privacy-evidence.md.

Runs each attack through the same code as ``flame attack NAME --size full``,
writes the JSON results and figures under ``runs/attacks-full/`` (the gradient
inversion panel is also copied to ``docs/img/``) and saves the headline figures
to ``benchmarks/results/attacks.json``.

    .venv/bin/python benchmarks/attacks.py [--only dp-audit membership-inference ...] [--seed 0]

About 22 minutes on an idle 2-core CPU, 15 of them membership inference (2 x 16 models).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save  # noqa: E402

from flame_private.attacks.result import ATTACKS  # noqa: E402
from flame_private.attacks.runner import run_attack  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "attacks-full")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    figures: dict[str, object] = {}
    for name in args.only:
        t0 = time.perf_counter()
        result, _ = run_attack(name, args.out, "full", args.seed)
        for fig in result.figures:
            shutil.copyfile(args.out / fig, ROOT / "docs" / "img" / fig)
        figures[name] = {"passed": result.passed, "positive_control_ok": result.positive_control_ok,
                         "protection_held": result.protection_held, "seconds": round(time.perf_counter() - t0, 1),
                         "accounted_epsilon": result.accounted_epsilon,
                         "arms": {a.name: {"attack_succeeded": a.attack_succeeded, **a.metrics} for a in result.arms}}
        print(f"\n== {result.title}: {'passed' if result.passed else 'FAILED'} ({figures[name]['seconds']} s)")
        print(result.summary)
        for arm in result.arms:
            print(f"  - {arm.name}: {arm.detail}")
    previous = RESULTS / "attacks.json"
    if previous.is_file():  # a run of some attacks keeps the figures of the others
        figures = {**json.loads(previous.read_text(encoding="utf-8"))["figures"].get("attacks", {}), **figures}
    print(f"\nsaved {save('attacks', {'seed': args.seed, 'size': 'full', 'attacks': figures})}")


if __name__ == "__main__":
    main()
