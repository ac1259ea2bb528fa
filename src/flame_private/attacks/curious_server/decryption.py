"""b. Decryption: can anything the server holds, or can make, decrypt what it received?

Each ciphertext must parse under the params-only context; decrypting with
anything the server holds must fail (there is no key; every file it holds is
tried as a SEAL secret key); a fresh secret key under the same parameters (the
best a server could do) must give values uncorrelated with the truth.
Control: the site's secret key decrypts to the truth, and the same "try every
file as a key" finds the key in a site's folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tenseal.sealapi as sa

from flame_private.attacks.curious_server.recorded_federation import (
    Federation,
    Received,
    global_sum_groups,
    server_files,
)
from flame_private.attacks.curious_server.settings import RUN_ID
from flame_private.federation.server.checkpoint import SUFFIX, read_checkpoint_file
from flame_private.secure.public.envelope import parse_envelope, validate_envelope
from flame_private.secure.public.params import ParamsContext
from flame_private.secure.site.codec import decrypt_packed
from flame_private.secure.site.keys import SecretContext


def _pooled_corr(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Pearson r over all values, each vector standardised on its own (a length-weighted mean of the r's).

    Pooling matters: a metric vector has a dozen values, whose r alone swings
    by +-0.3 by chance; over every ciphertext's tens of thousands of values,
    chance gives |r| < 0.02.
    """
    num = total = 0.0
    for guess, truth in pairs:
        g, t = np.asarray(guess, np.float64), np.asarray(truth, np.float64)
        if not np.all(np.isfinite(g)) or g.std() == 0 or t.std() == 0:
            total += t.size
            continue
        num += float(((g - g.mean()) / g.std()) @ ((t - t.mean()) / t.std()))
        total += t.size
    return num / total if total else 0.0


def _rel_error(guess: np.ndarray, truth: np.ndarray) -> float:
    """RMS error relative to the RMS of the truth."""
    scale = float(np.sqrt(np.mean(np.square(truth)))) or 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        err = float(np.sqrt(np.mean(np.square(np.asarray(guess, np.float64) - truth))))
    return err / scale if np.isfinite(err) else float("inf")


def _try_file_as_key(params: ParamsContext, path: Path) -> sa.SecretKey | None:
    """What a server could do with a file: load it as a SEAL secret key for these parameters."""
    key = sa.SecretKey()
    try:
        key.load(params.seal, str(path))
    except (RuntimeError, ValueError):
        return None
    return key if key.parms_id() == params.seal.key_parms_id() else None


def _files_that_load_as_keys(params: ParamsContext, files: Sequence[Path]) -> list[str]:
    return [str(p) for p in files if _try_file_as_key(params, p) is not None]


def decryption_check(fed: Federation, received: Sequence[Received], params: ParamsContext,
                     secret: SecretContext) -> dict[str, Any]:
    """Parse each ciphertext as the server; decrypt with what it holds, with a fresh key, and with the site's key."""
    cts = [r for r in received if r.payload is not None]
    for path in sorted(fed.run_dir.rglob(f"*{SUFFIX}")):  # what the server checkpointed
        header, payload = read_checkpoint_file(path)
        cts.append(Received(seq=0, site_id="server", step=path.stem, wire=b"", header=header, payload=payload))
    plains = [r.plain for r in received if r.plain is not None]
    sums = {k: np.sum([p.vector for p in g], axis=0) for k, g in global_sum_groups(plains).items()}
    fresh = SecretContext(params=params, secret_key=sa.KeyGenerator(params.seal).secret_key())
    out: dict[str, Any] = {"ciphertexts": len(cts), "valid": 0, "invalid": []}
    fresh_pairs, key_pairs = [], []
    for item in cts:
        assert item.header is not None and item.payload is not None
        env = parse_envelope(item.header)
        truth = item.plain.vector if item.plain is not None else sums[(env.task, env.round, env.model)]
        try:
            validate_envelope(env, item.payload, params, run_id=RUN_ID, task=env.task, round=env.round,
                              kind=env.kind, model=env.model, source=f"{item.site_id} {item.step}")
            out["valid"] += 1
        except ValueError as exc:
            out["invalid"].append(f"{item.site_id} {item.step}: {exc}")
            continue
        fresh_pairs.append((decrypt_packed(fresh, item.payload, env.n_params), truth))
        key_pairs.append((decrypt_packed(secret, item.payload, env.n_params), truth))
    out["fresh_corr"] = _pooled_corr(fresh_pairs)
    out["fresh_min_rel_error"] = min((_rel_error(g, t) for g, t in fresh_pairs), default=float("inf"))
    out["fresh_values"] = sum(t.size for _, t in fresh_pairs)
    out["key_corr"] = _pooled_corr(key_pairs)
    out["key_max_error"] = max((float(np.max(np.abs(g - t))) for g, t in key_pairs), default=float("inf"))
    try:
        sa.Decryptor(params.seal, sa.SecretKey())
        out["params_only_refused"] = False
    except (RuntimeError, ValueError) as exc:
        out["params_only_refused"] = True
        out["params_only_error"] = str(exc)
    out["server_has_key_field"] = any(isinstance(getattr(params, f, None), sa.SecretKey) for f in vars(params))
    out["server_files_tried_as_key"] = len(server_files(fed))
    out["server_files_loading_as_key"] = _files_that_load_as_keys(params, server_files(fed))
    site_files = sorted(p for p in next(iter(fed.site_dirs.values())).rglob("*") if p.is_file())
    out["site_files_loading_as_key"] = _files_that_load_as_keys(params, site_files)
    return out

