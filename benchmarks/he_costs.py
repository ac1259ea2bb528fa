"""HE costs of one FedAvg round: wire bytes per parameter, seconds per 1 M parameters, error.

Four sites encrypt [n_k * w_k | n_k] for 1 M parameters (w uniform in [-0.1, 0.1],
n_k = 40, 60, 80, 100), the keyless server adds, one site decrypts and divides.
Compares the default (N=8192 [60,60] 2^40) with the N=4096 options of
docs/references.md 8 and one N=4096 option sized by the range analysis.

    .venv/bin/python benchmarks/he_costs.py [--params 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tenseal.sealapi as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from flame_private.config import HEConfig  # noqa: E402
from flame_private.secure import codec, params  # noqa: E402
from flame_private.secure.errors import OverflowRisk  # noqa: E402
from flame_private.secure.keys import SecretContext  # noqa: E402

CONFIGS = {
    "N8192_[60,60]_2^40 (default)": HEConfig(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60], scale_bits=40),
    "N4096_[40,40]_2^28": HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 40], scale_bits=28),
    "N4096_[32]_2^28": HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[32], scale_bits=28),
    "N4096_[50]_2^30": HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[50], scale_bits=30),
}
COUNTS = (40, 60, 80, 100)


def measure(name: str, he: HEConfig, n_params: int, rng: np.random.Generator) -> dict:
    ctx = params.ParamsContext.from_config(he)
    secret = SecretContext(params=ctx, secret_key=sa.KeyGenerator(ctx.seal).secret_key())  # no files needed here
    weights = [rng.uniform(-0.1, 0.1, n_params) for _ in COUNTS]
    vectors = [np.concatenate([n * w, [n]]) for n, w in zip(COUNTS, weights)]
    row: dict = {"config": name, "he": he.model_dump(), "n_params": n_params, "sites": len(COUNTS),
                 "max_safe_magnitude_16_sites": codec.max_safe_magnitude(he, 16),
                 "max_safe_magnitude_4_sites": codec.max_safe_magnitude(he, 4),
                 "largest_value": float(max(np.abs(v).max() for v in vectors))}
    try:
        t = time.perf_counter()
        payloads = [codec.encrypt_vector(secret, v, max_sites=len(COUNTS)) for v in vectors]
        enc_s = (time.perf_counter() - t) / len(COUNTS)
    except OverflowRisk as exc:
        row["refused"] = str(exc)
        return row
    t = time.perf_counter()
    total = params.add_ciphertexts(payloads, ctx)
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    agg = codec.decrypt_vector(secret, total, n_params + 1)
    dec_s = time.perf_counter() - t
    exact = sum(vectors)
    mean = agg[:n_params] / round(agg[n_params])
    want = exact[:n_params] / exact[n_params]
    per_m = 1e6 / n_params
    row.update({
        "update_bytes_per_param": len(payloads[0]) / n_params,
        "aggregate_bytes_per_param": len(total) / n_params,
        "encrypt_s_per_1M": enc_s * per_m,
        "server_add_4_s_per_1M": add_s * per_m,
        "decrypt_s_per_1M": dec_s * per_m,
        "max_abs_error_sum": float(np.abs(agg - exact).max()),
        "max_abs_error_mean": float(np.abs(mean - want).max()),
    })
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = [measure(name, he, args.params, rng) for name, he in CONFIGS.items()]
    head = (f"{'config':30s} {'B/param':>8s} {'agg B/p':>8s} {'enc s/M':>8s} {'add4 s/M':>9s} {'dec s/M':>8s} "
            f"{'err(mean)':>10s} {'safe@16':>9s}")
    print(head)
    for r in rows:
        if "refused" in r:
            print(f"{r['config']:30s} refused: {r['refused'][:80]}... safe@16={r['max_safe_magnitude_16_sites']:.3g}")
            continue
        print(f"{r['config']:30s} {r['update_bytes_per_param']:8.2f} {r['aggregate_bytes_per_param']:8.2f} "
              f"{r['encrypt_s_per_1M']:8.3f} {r['server_add_4_s_per_1M']:9.3f} {r['decrypt_s_per_1M']:8.3f} "
              f"{r['max_abs_error_mean']:10.2e} {r['max_safe_magnitude_16_sites']:9.3g}")
    path = save("he_costs", {"counts": list(COUNTS), "weights": "uniform [-0.1, 0.1]", "rows": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
