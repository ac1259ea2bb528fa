"""One federated round's wall time, split by stage, encrypted vs plaintext FedAvg, for the demo models.

For each model (response, evolution) with K sites: local DP-SGD training of one
site (one epoch on a synthetic batch stream of the demo's size), encryption of
its update, the wire transfer (serialising to and from Flower's ArrayRecord, the
bytes on the wire), the server's addition of K ciphertexts, and a site's
decryption; then the same round with plaintext FedAvg (float32 arrays, numpy
weighted mean). Sites train in parallel in a real federation, so a round costs
one site's train + encrypt + transfer + the server's add + decrypt.

Usage: python benchmarks/round_costs.py [--grid 48] [--sites 4] [--patients 14]
"""

from __future__ import annotations

import argparse
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
from flame_private.secure.codec import decrypt_aggregate, encrypt_update
from flame_private.secure.keys import key_ceremony, load_secret_context
from flame_private.secure.packing import ParamLayout
from flame_private.secure.params import aggregate_updates, load_params_context
from flame_private.training import TrainSettings, train


class Synthetic(torch.utils.data.Dataset):
    def __init__(self, task: str, n: int, g: int) -> None:
        self.task, self.n, self.g = task, n, g

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = self.g
        gen = torch.Generator().manual_seed(i)
        item = {"image": torch.randn(4, g, g, g, generator=gen), "seg": torch.randint(0, 4, (1, g, g, g), generator=gen),
                "treatment": torch.eye(3)[i % 3]}
        if self.task == "response":
            item |= {"covariates": torch.zeros(6), "label": torch.tensor(float(i % 2))}
        else:
            item |= {"interval": torch.ones(1) * 0.3, "target": torch.randint(0, 4, (1, g, g, g), generator=gen)}
        return item


def timed(fn):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", type=int, default=48)
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--patients", type=int, default=14)
    args = ap.parse_args()
    he = HEConfig()
    tmp = Path(tempfile.mkdtemp(prefix="flame-round-"))
    key_ceremony(he, tmp / "keys")
    secret = load_secret_context(tmp / "keys" / "site-secret.ctx")
    ctx = load_params_context(tmp / "keys" / "server-params.ctx")
    rows = {}
    for task in ("response", "evolution"):
        torch.manual_seed(0)
        model = build_model(task, ModelConfig())  # type: ignore[arg-type]
        n_params = count_parameters(model)
        data = Synthetic(task, args.patients, args.grid)
        settings = TrainSettings(epochs=1, batch_size=4)
        plan = plan_dp(model, args.patients, 4, 1, DPConfig(noise_multiplier=1.5))
        result, t_train = timed(lambda: train(model, task, data, settings, plan))  # noqa: B023
        state = result.model.state_dict()
        layout = ParamLayout.from_state_dict(state)
        (env, ct), t_enc = timed(lambda: encrypt_update(secret, state, args.patients, site_id="site-0",  # noqa: B023
                                                        run_id="bench", task=task,  # noqa: B023
                                                        round=1, model=task, layout=layout))  # noqa: B023
        record, t_ser = timed(lambda: ct_record(env.model_dump_json(), ct))  # noqa: B023
        _, t_de = timed(lambda: read_ct_record(record))  # noqa: B023
        updates = [(env.model_copy(update={"contributor_ids": [f"site-{i}"]}), ct) for i in range(args.sites)]
        (agg_env, agg), t_add = timed(lambda: aggregate_updates(updates, ctx, min_contributors=3))  # noqa: B023
        _, t_dec = timed(lambda: decrypt_aggregate(secret, agg_env, agg, layout, run_id="bench", task=task,  # noqa: B023
                                                   round=1, model=task))
        # Plaintext FedAvg of the same update.
        flat = [np.concatenate([v.detach().numpy().ravel().astype(np.float32) for v in state.values()])] * args.sites
        _, t_plain_agg = timed(lambda: np.average(np.stack(flat), axis=0, weights=[args.patients] * args.sites))  # noqa: B023
        he_round = t_train + t_enc + t_ser + t_de + t_add + t_dec
        plain_round = t_train + t_plain_agg
        rows[task] = {
            "parameters": n_params,
            "train_s": round(t_train, 3), "encrypt_s": round(t_enc, 3),
            "transfer_serialise_s": round(t_ser + t_de, 4), "server_add_s": round(t_add, 3),
            "decrypt_s": round(t_dec, 3), "plaintext_aggregate_s": round(t_plain_agg, 4),
            "round_he_s": round(he_round, 3), "round_plaintext_s": round(plain_round, 3),
            "he_overhead_pct": round(100 * (he_round / plain_round - 1), 1),
            "upload_bytes_per_param": round(len(ct) / n_params, 2),
            "download_bytes_per_param": round(len(agg) / n_params, 2),
            "plaintext_bytes_per_param": 4.0,
        }
        print(task, rows[task], flush=True)
    print(f"saved {save('round_costs', {'grid': args.grid, 'sites': args.sites, 'patients': args.patients, **rows})}")


if __name__ == "__main__":
    main()
