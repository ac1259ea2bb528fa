"""The server's cost against the size of the consortium: aggregation time and peak memory per round.

For each number of sites (3 to 32) and model size (0.5 to 8 M parameters), every
site encrypts its own update with the site codec (``codec.encrypt_update``, the
default CKKS parameters, 100 patients a site), the payloads are written to disk,
and a fresh server process (no key) reads them, checks every header and payload
(``envelope.validate_envelope``) and adds them (``aggregate.aggregate_updates``):
what the ServerApp does with one task's replies.  The server process reports its
wall time and its peak resident memory (``ru_maxrss``), beside the same process's
memory before it read any payload.  Flower hands the ServerApp every reply of a
round at once, so the server holds all payloads together: its memory grows with
sites x parameters.

A consortium larger than the CKKS parameters' ``max_sites`` headroom is refused
by the packing check before anything is encrypted; the row says so and why.

    .venv/bin/python benchmarks/federation_scale.py [--sites 3 8 16 32 50] [--params 500000 2000000 8000000]

Saves benchmarks/results/federation_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

PATIENTS_PER_SITE = 100
RUN = {"run_id": "scale", "task": "response", "round": 1, "model": "m"}


PARAMS = {"default": {}, "N8192_[60,60]_2^40": {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 60],
                                                   "scale_bits": 40}}
"""The default CKKS parameters, then the former default (more headroom, twice the bytes) where they refuse."""


def _he(sites: int, name: str):  # noqa: ANN202 - HEConfig, imported late
    from flame_private.config import HEConfig

    return HEConfig(max_sites=max(16, sites), max_patients=PATIENTS_PER_SITE * max(16, sites), **PARAMS[name])


def encrypt_sites(sites: int, n_params: int, folder: Path, he_name: str) -> dict:
    """Each site's real encrypted update, written as ``<i>.env`` / ``<i>.ct``; the encryption seconds per site."""
    import numpy as np
    import tenseal.sealapi as sa
    import torch

    from flame_private.secure.public import headroom, packing, params
    from flame_private.secure.site import codec
    from flame_private.secure.site.keys import SecretContext

    he = _he(sites, he_name)
    ctx = params.ParamsContext.from_config(he)
    secret = SecretContext(params=ctx, secret_key=sa.KeyGenerator(ctx.seal).secret_key())
    rng = np.random.default_rng(sites * 7 + n_params)
    base = torch.from_numpy(rng.uniform(-0.1, 0.1, n_params))
    layout = packing.ParamLayout.from_state_dict({"w": base}, count_bound=he.max_patients, max_sites=he.max_sites)
    headroom.check_packing(ctx, layout)
    t = time.perf_counter()
    for i in range(sites):
        local = {"w": (base + torch.from_numpy(rng.uniform(-0.01, 0.01, n_params))).clamp(-0.1, 0.1)}
        env, payload = codec.encrypt_update(secret, local, PATIENTS_PER_SITE, site_id=f"site-{i:02d}",
                                            layout=layout, **RUN)
        (folder / f"{i}.env").write_text(env.model_dump_json(), encoding="utf-8")
        (folder / f"{i}.ct").write_bytes(payload)
    (folder / "params.json").write_text(json.dumps({"sites": sites, "he": he.model_dump()}), encoding="utf-8")
    return {"encrypt_s_per_site": (time.perf_counter() - t) / sites,
            "upload_mb_per_site": (folder / "0.ct").stat().st_size / 1e6}


def server_step(folder: Path) -> dict:
    """In a fresh process: read every payload, validate and add, as the ServerApp does; time and peak memory."""
    from flame_private.config import HEConfig
    from flame_private.secure.public import aggregate, envelope, params

    info = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    ctx = params.ParamsContext.from_config(HEConfig.model_validate(info["he"]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    updates = [(envelope.parse_envelope((folder / f"{i}.env").read_text(encoding="utf-8")),
                (folder / f"{i}.ct").read_bytes()) for i in range(info["sites"])]
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    parsed = [envelope.validate_envelope(env, p, ctx, **{k: RUN[k] for k in ("run_id", "task", "round")})
              for env, p in updates]
    validate_s = time.perf_counter() - t
    t = time.perf_counter()
    _, total = aggregate.aggregate_updates(updates, ctx, parsed=parsed)
    add_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"read_s": read_s, "validate_s": validate_s, "add_and_serialise_s": add_s,
            "server_s": read_s + validate_s + add_s, "download_mb": len(total) / 1e6,
            "server_rss_before_mb": before, "server_peak_rss_mb": peak}


def measure(sites: int, n_params: int) -> dict:
    from flame_private.secure.public.errors import HEError

    row: dict = {"sites": sites, "n_params": n_params, "patients_per_site": PATIENTS_PER_SITE, "refused": {}}
    with tempfile.TemporaryDirectory(prefix="flame-scale-") as tmp:
        for he_name in PARAMS:
            try:
                row.update(encrypt_sites(sites, n_params, Path(tmp), he_name), he=he_name)
                break
            except HEError as exc:  # parameters without the headroom for this consortium: a result
                row["refused"][he_name] = str(exc)
        else:
            return row
        out = subprocess.run([sys.executable, __file__, "--server-step", tmp], check=True, capture_output=True,
                             text=True, env={**os.environ, "FLAME_HE_WORKERS": os.environ.get("FLAME_HE_WORKERS", "1")})
        row.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, nargs="+", default=[3, 8, 16, 32, 50])
    ap.add_argument("--params", type=int, nargs="+", default=[500_000, 2_000_000, 8_000_000])
    ap.add_argument("--server-step", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server_step is not None:
        print(json.dumps(server_step(args.server_step)))
        return
    rows = []
    print(f"{'sites':>5s} {'params':>9s} {'enc s/site':>10s} {'server s':>8s} {'peak MB':>8s} {'base MB':>8s} "
          f"{'up MB':>7s} {'down MB':>7s}", flush=True)
    for n_params in args.params:
        for sites in args.sites:
            r = measure(sites, n_params)
            rows.append(r)
            if "he" not in r:
                print(f"{sites:5d} {n_params:9d} refused by every parameter set: {r['refused']}", flush=True)
                continue
            print(f"{sites:5d} {n_params:9d} {r['encrypt_s_per_site']:10.2f} {r['server_s']:8.2f} "
                  f"{r['server_peak_rss_mb']:8.0f} {r['server_rss_before_mb']:8.0f} {r['upload_mb_per_site']:7.1f} "
                  f"{r['download_mb']:7.1f} {r['he']}", flush=True)
    figures = {"command": "python benchmarks/federation_scale.py --sites " + " ".join(map(str, args.sites))
               + " --params " + " ".join(map(str, args.params)),
               "he": {"sets": PARAMS, "max_sites": "max(16, sites)", "max_patients": "100 x max_sites",
                      "rule": "the default set (N=4096, one 32-bit prime, scale 2^30), else the next that accepts"},
               "load_average": list(os.getloadavg()), "rows": rows}
    print(f"saved {save('federation_scale', figures)}")


if __name__ == "__main__":
    main()
