"""One federated round's wall time, split by stage, encrypted vs plaintext FedAvg, for the demo models.

For each model (response, evolution) with K sites: local DP-SGD training of one
site (one epoch on a synthetic batch stream of the demo's size), encryption of
its update, the wire transfer (serialising to and from Flower's ArrayRecord, the
bytes on the wire), the server's work (validating each of the K ciphertexts and
adding them, each parsed once, as the strategy does), and a site's decryption;
then the same round with plaintext FedAvg (float32 arrays, numpy weighted mean).
Sites train in parallel in a real federation, so a round costs one site's
train + encrypt + transfer + the server's validate-and-add + decrypt.

The HE stages are timed ``--repeats`` times and the median kept (the machine
may be shared); the load average is saved with the figures, since ratios are
only comparable within one run.  Each model is trained once and its update
goes through the default parameters as configured (``FLAME_HE_WORKERS`` unset:
one process unless the environment says otherwise; the counts chosen are
saved), explicitly in one process
(``FLAME_HE_WORKERS=1``, the reference path), split over every CPU whether busy
or not (``FLAME_HE_WORKERS`` = the CPU count), and the former default (N=8192
[60, 60] 2^40), so all overheads share one training time; the variants take
turns within each repeat, so they see the same load.  The CPU seconds of the HE
stages (this process and its forked workers) are saved per 1 M parameters: a
figure the machine's other jobs barely change.

Usage: python benchmarks/round_costs.py [--grid 48] [--sites 4] [--patients 14] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import save

from flame_private.config import DPConfig, HEConfig, ModelConfig
from flame_private.federation.protocol import ct_record, read_ct_record
from flame_private.models import build_model, count_parameters
from flame_private.privacy.dp import plan_dp
from flame_private.secure.public._sealio import WORKERS_ENV, default_workers
from flame_private.secure.public.aggregate import aggregate_updates
from flame_private.secure.public.context_file import load_params_context
from flame_private.secure.public.envelope import validate_envelope
from flame_private.secure.public.packing import ParamLayout
from flame_private.secure.site.ceremony import key_ceremony
from flame_private.secure.site.codec import decrypt_aggregate, encrypt_update
from flame_private.secure.site.keys import load_secret_context
from flame_private.training import TrainSettings, train


class Synthetic(torch.utils.data.Dataset):
    def __init__(self, task: str, n: int, g: int) -> None:
        self.task, self.n, self.g = task, n, g

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = self.g
        gen = torch.Generator().manual_seed(i)
        item = {"image": torch.randn(4, g, g, g, generator=gen),
                "seg": torch.randint(0, 4, (1, g, g, g), generator=gen), "treatment": torch.eye(3)[i % 3]}
        if self.task == "response":
            item |= {"covariates": torch.zeros(6), "label": torch.tensor(float(i % 2))}
        else:
            item |= {"interval": torch.ones(1) * 0.3, "target": torch.randint(0, 4, (1, g, g, g), generator=gen)}
        return item


def timed(fn):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (the forked HE workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextlib.contextmanager
def he_workers(workers: str | None):  # noqa: ANN201
    """Run with ``FLAME_HE_WORKERS`` set to ``workers`` (None: unset, the default)."""
    before = os.environ.pop(WORKERS_ENV, None)
    if workers is not None:
        os.environ[WORKERS_ENV] = workers
    try:
        yield
    finally:
        os.environ.pop(WORKERS_ENV, None)
        if before is not None:
            os.environ[WORKERS_ENV] = before


CONFIGS = {
    "default": HEConfig(),
    "former_default": HEConfig(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60], scale_bits=40),
}
VARIANTS = {  # name: (parameters, FLAME_HE_WORKERS)
    "default": ("default", None),
    "default_one_process": ("default", "1"),
    "default_all_cpus": ("default", str(len(os.sched_getaffinity(0)))),
    "former_default": ("former_default", None),
}


def he_stages(secret, ctx, state, layout, task: str, args: argparse.Namespace) -> dict[str, float]:  # noqa: ANN001
    """One site's encryption, the wire, the server's validate-and-add of K updates, one site's decryption."""
    cpu0, workers = cpu_seconds(), default_workers()
    (env, ct), t_enc = timed(lambda: encrypt_update(secret, state, args.patients, site_id="site-0", run_id="bench",
                                                    task=task, round=1, model=task, layout=layout))
    record, t_ser = timed(lambda: ct_record(env.model_dump_json(), ct))
    _, t_de = timed(lambda: read_ct_record(record))
    updates = [(env.model_copy(update={"contributor_ids": [f"site-{i}"]}), ct) for i in range(args.sites)]

    def server() -> tuple:
        parsed = [validate_envelope(e, p, ctx, run_id="bench", task=task, round=1, model=task) for e, p in updates]
        return aggregate_updates(updates, ctx, min_contributors=3, parsed=parsed)

    (agg_env, agg), t_add = timed(server)
    _, t_dec = timed(lambda: decrypt_aggregate(secret, agg_env, agg, layout, run_id="bench", task=task, round=1,
                                               model=task))
    return {"encrypt_s": t_enc, "transfer_serialise_s": t_ser + t_de, "server_validate_add_s": t_add,
            "decrypt_s": t_dec, "cpu_s": cpu_seconds() - cpu0, "workers": workers, "upload": len(ct),
            "download": len(agg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", type=int, default=48)
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--patients", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="flame-round-"))
    contexts = {}
    for name, he in CONFIGS.items():
        he = he.model_copy(update={"max_patients": args.sites * args.patients})
        key_ceremony(he, tmp / name)
        contexts[name] = (he, load_secret_context(tmp / name / "site-secret.ctx"),
                          load_params_context(tmp / name / "server-params.ctx"))
    rows: dict[str, dict] = {name: {} for name in VARIANTS}
    trained = {}
    for task in ("response", "evolution"):
        torch.manual_seed(0)
        model = build_model(task, ModelConfig())  # type: ignore[arg-type]
        n_params = count_parameters(model)
        data = Synthetic(task, args.patients, args.grid)
        settings = TrainSettings(epochs=1, batch_size=4)
        plan = plan_dp(model, args.patients, 4, 1, DPConfig(noise_multiplier=1.5))
        cpu0 = cpu_seconds()
        result, t_train = timed(lambda: train(model, task, data, settings, plan))  # noqa: B023
        train_cpu = cpu_seconds() - cpu0
        state = result.model.state_dict()
        # Plaintext FedAvg of the same update.
        flat = [np.concatenate([v.detach().numpy().ravel().astype(np.float32) for v in state.values()])] * args.sites
        _, t_plain = timed(lambda: np.average(np.stack(flat), axis=0, weights=[args.patients] * args.sites))  # noqa: B023
        trained[task] = {"parameters": n_params, "train_s": round(t_train, 3), "train_cpu_s": round(train_cpu, 3),
                         "plaintext_aggregate_s": round(t_plain, 4), "round_plaintext_s": round(t_train + t_plain, 3)}
        layouts = {name: ParamLayout.from_state_dict(build_model(task, ModelConfig()).state_dict(),  # type: ignore[arg-type]
                                                     count_bound=he.max_patients, max_sites=he.max_sites)
                   for name, (he, _, _) in contexts.items()}
        runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):
            for name, (config, workers) in VARIANTS.items():
                _, secret, ctx = contexts[config]
                with he_workers(workers):
                    runs[name].append(he_stages(secret, ctx, state, layouts[config], task, args))
        for name in VARIANTS:
            med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0] if k != "workers"}
            he_s = med["encrypt_s"] + med["transfer_serialise_s"] + med["server_validate_add_s"] + med["decrypt_s"]
            rows[name][task] = {
                "he_workers_seen": sorted({r["workers"] for r in runs[name]}),
                "encrypt_s": round(med["encrypt_s"], 3),
                "transfer_serialise_s": round(med["transfer_serialise_s"], 4),
                "server_validate_add_s": round(med["server_validate_add_s"], 3),
                "decrypt_s": round(med["decrypt_s"], 3),
                "he_s": round(he_s, 3),
                "he_cpu_s_per_mparam": round(med["cpu_s"] / (n_params / 1e6), 3),
                "round_he_s": round(t_train + he_s, 3),
                "he_overhead_pct": round(100 * (t_train + he_s) / (t_train + t_plain) - 100, 1),
                "upload_bytes_per_param": round(med["upload"] / n_params, 3),
                "download_bytes_per_param": round(med["download"] / n_params, 3),
            }
            print(task, name, rows[name][task], flush=True)
    plain_s = sum(t["round_plaintext_s"] for t in trained.values())
    for name in rows:
        he_s = sum(rows[name][t]["round_he_s"] for t in trained)
        rows[name]["both_models"] = {"round_he_s": round(he_s, 3), "round_plaintext_s": round(plain_s, 3),
                                     "he_overhead_pct": round(100 * (he_s / plain_s - 1), 1)}
        print(name, "both models", rows[name]["both_models"])
    figures = {"grid": args.grid, "sites": args.sites, "patients": args.patients, "repeats": args.repeats,
               "he": {name: he.model_dump(include={"poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits",
                                                   "max_patients"}) for name, (he, _, _) in contexts.items()},
               "nice": os.nice(0),  # below 0: run ahead of the machine's other jobs
               "load_average_at_start": [round(x, 2) for x in load_start],
               "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
               "plaintext": trained, **rows}
    print(f"saved {save('round_costs', figures)}")


if __name__ == "__main__":
    main()
