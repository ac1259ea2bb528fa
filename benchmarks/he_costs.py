"""HE costs of one FedAvg round: wire bytes per parameter, seconds per 1 M parameters, error.

For each CKKS configuration, the real pipeline (``packing`` + ``codec`` + the
keyless server's sum):

- **typical**: four sites encrypt 1 M parameters (w uniform in [-0.1, 0.1]
  around a shared round-1 model whose largest |w| is 0.1, so the automatic
  weight bound W is 0.25; n_k = 40, 60, 80, 100; the public bound C on the
  patients = their total, 280, and twice that), the server adds, one site
  decrypts.  Bytes per parameter up and down, seconds, error of the mean.
- **worst case**: ``max_sites`` (16) sites, every weight at +-W, counts adding
  up to exactly C: the largest sum the packing allows (fewer parameters).

Errors are the largest |FedAvg mean - exact weighted mean| over all parameters,
relative to the largest |weight| (the target: <= 1e-5).

    .venv/bin/python benchmarks/he_costs.py [--params 1000000] [--worst-params 200000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import tenseal.sealapi as sa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from flame_private.config import HE_MAX_MODULUS_BITS, HEConfig  # noqa: E402
from flame_private.secure.public import aggregate, envelope, headroom, packing, params  # noqa: E402
from flame_private.secure.site import codec  # noqa: E402
from flame_private.secure.site.keys import SecretContext  # noqa: E402

CONFIGS = {
    "N4096_[32]_2^30 (default)": HEConfig(),
    "N4096_[32]_2^28": HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[32], scale_bits=28),
    "N4096_[50]_2^30": HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[50], scale_bits=30),
    "N8192_[60,60]_2^40 (former default)": HEConfig(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60],
                                                    scale_bits=40),
}
COUNTS = (40, 60, 80, 100)
RUN = {"run_id": "bench", "task": "response", "round": 1, "model": "m"}


def _secret(he: HEConfig) -> SecretContext:
    ctx = params.ParamsContext.from_config(he)
    return SecretContext(params=ctx, secret_key=sa.KeyGenerator(ctx.seal).secret_key())  # no files needed here


def _round(secret: SecretContext, sites: list[dict], counts: list[int], layout: packing.ParamLayout) -> dict:
    """Encrypt at every site, validate and add at the server, decrypt at one site; time and measure it."""
    ctx = secret.params
    t = time.perf_counter()
    updates = [codec.encrypt_update(secret, sd, n, site_id=f"s{i}", layout=layout, **RUN)
               for i, (sd, n) in enumerate(zip(sites, counts))]
    enc_s = (time.perf_counter() - t) / len(sites)
    t = time.perf_counter()
    parsed = [envelope.validate_envelope(env, p, ctx, run_id="bench", task="response", round=1)
              for env, p in updates]
    env, total = aggregate.aggregate_updates(updates, ctx, parsed=parsed, max_contributors=layout.max_sites)
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    mean, n = codec.decrypt_aggregate(secret, env, total, layout, run_id="bench", task="response", round=1,
                                      model="m", max_sites=layout.max_sites)
    dec_s = time.perf_counter() - t
    want = sum(c * sd["w"] for sd, c in zip(sites, counts)) / sum(counts)
    largest = max(float(sd["w"].abs().max()) for sd in sites)
    return {"upload_bytes_per_param": len(updates[0][1]) / layout.n_params,
            "download_bytes_per_param": len(total) / layout.n_params,
            "encrypt_s": enc_s, "server_validate_add_s": add_s, "decrypt_s": dec_s,
            "count_ok": n == sum(counts), "largest_weight": largest,
            "max_error_mean_rel_largest_weight": float((mean["w"] - want).abs().max()) / largest}


def measure(name: str, he: HEConfig, n_params: int, worst_params: int, rng: np.random.Generator) -> dict:
    secret = _secret(he)
    row: dict = {"config": name, "he": he.model_dump(include={"poly_modulus_degree", "coeff_mod_bit_sizes",
                                                               "scale_bits"}),
                 "modulus_bits": sum(he.coeff_mod_bit_sizes), "bound_bits": HE_MAX_MODULUS_BITS[he.poly_modulus_degree],
                 "max_sum_magnitude_16_sites": headroom.max_sum_magnitude(he, 16)}
    base = torch.from_numpy(rng.uniform(-0.1, 0.1, n_params))
    sites = [{"w": (base + torch.from_numpy(rng.uniform(-0.01, 0.01, n_params))).clamp(-0.1, 0.1)}
             for _ in COUNTS]
    per_m = 1e6 / n_params
    for label, c_bound in (("typical_C=total", sum(COUNTS)), ("typical_C=2x_total", 2 * sum(COUNTS))):
        layout = packing.ParamLayout.from_state_dict({"w": base}, count_bound=c_bound, max_sites=he.max_sites)
        r = _round(secret, sites, list(COUNTS), layout)
        for key in ("encrypt_s", "server_validate_add_s", "decrypt_s"):
            r[key.replace("_s", "_s_per_1M")] = r.pop(key) * per_m
        r["weight_bound"] = layout.value_bound
        row[label] = r
    w_bound, sites16 = 4.0, he.max_sites
    counts = [int(c) for c in rng.integers(1, 200, sites16)]
    layout = packing.ParamLayout.from_state_dict({"w": torch.zeros(worst_params)}, value_bound=w_bound,
                                                 count_bound=sum(counts), max_sites=sites16)
    worst = [{"w": torch.from_numpy(rng.choice([-w_bound, w_bound], worst_params))} for _ in range(sites16)]
    r = _round(secret, worst, counts, layout)
    row["worst_case"] = {"sites": sites16, "n_params": worst_params, "weight_bound": w_bound,
                         "count_bound": sum(counts), "count_ok": r["count_ok"],
                         "max_error_mean_rel_largest_weight": r["max_error_mean_rel_largest_weight"]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--worst-params", type=int, default=200_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    load = os.getloadavg()
    rows = [measure(name, he, args.params, args.worst_params, rng) for name, he in CONFIGS.items()]
    print(f"{'config':36s} {'up B/p':>7s} {'down B/p':>8s} {'enc s/M':>8s} {'add4 s/M':>9s} {'dec s/M':>8s} "
          f"{'err C=tot':>10s} {'err C=2x':>9s} {'err worst16':>11s}")
    for r in rows:
        a, b, w = r["typical_C=total"], r["typical_C=2x_total"], r["worst_case"]
        print(f"{r['config']:36s} {a['upload_bytes_per_param']:7.3f} {a['download_bytes_per_param']:8.3f} "
              f"{a['encrypt_s_per_1M']:8.3f} {a['server_validate_add_s_per_1M']:9.3f} {a['decrypt_s_per_1M']:8.3f} "
              f"{a['max_error_mean_rel_largest_weight']:10.2e} {b['max_error_mean_rel_largest_weight']:9.2e} "
              f"{w['max_error_mean_rel_largest_weight']:11.2e}")
    path = save("he_costs", {"counts": list(COUNTS), "weights": "round-1 model uniform [-0.1, 0.1], sites +-0.01",
                             "load_average_at_start": [round(x, 2) for x in load],
                             "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "rows": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
