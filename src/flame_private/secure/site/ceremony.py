"""The key ceremony: the federation's CKKS key, made once, and the four files handed out.

KEY CUSTODIAN only (``secure/site``).  The federation's server must never import
this module; ``secure/public`` gives it everything it needs.

The ceremony runs once, at the custodian's.  It writes four files:

- ``site-secret.ctx`` (mode 0600): the shared CKKS secret key and parameters;
  handed to each site out of band, never to the server.
- ``server-params.ctx`` (mode 0644): the params-only context (~0.5 kB, no key of
  any kind): what the server needs to parse and add ciphertexts.
- ``he-fingerprint.txt`` (mode 0644): the sha256 of the parameters, which
  everybody compares before the first round.  It is the same for every key made
  with these parameters: it says nothing about which key a site holds.
- ``he-key-check.json`` (mode 0644): the key check value (``keycheck``), which
  identifies the key without revealing it; it reaches the sites by a channel
  other than the secret context's (or is read out on the telephone), and each
  site compares it with ``flame keys verify``.

Both context files use the container of ``secure.public.context_file``; the
secret key is the body, at the start of the file, so SEAL loads it straight from
its own file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tenseal.sealapi as sa

from flame_private.config import HEConfig
from flame_private.secure.public.context_file import encode_trailer, make_context_header, params_context_bytes
from flame_private.secure.public.errors import ContextFileError, HEError
from flame_private.secure.public.headroom import DEFAULT_REQUIRED_MAGNITUDE, check_headroom, check_packing
from flame_private.secure.public.packing import ParamLayout, TensorSpec
from flame_private.secure.public.params import ParamsContext, he_summary
from flame_private.secure.site.codec import decrypt_vector, encrypt_vector
from flame_private.secure.site.keycheck import key_check_bytes, key_check_value, make_key_check, short_kcv
from flame_private.secure.site.keys import (
    FINGERPRINT_NAME,
    KEY_CHECK_NAME,
    PARAMS_NAME,
    PUBLIC_MODE,
    SECRET_MODE,
    SECRET_NAME,
    load_secret_context,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CeremonyResult:
    """What the ceremony wrote."""

    secret_path: Path
    params_path: Path
    fingerprint_path: Path
    fingerprint: str
    max_safe_magnitude: float
    """Largest |value| the sum of up to max_sites sites may hold (packed updates sum to at most 1)."""
    key_check_path: Path
    key_check_value: str


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PUBLIC_MODE)
    try:
        os.fchmod(fd, PUBLIC_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_secret(path: Path, ctx: ParamsContext, created_at: str) -> sa.SecretKey:
    """Create the file 0600 first, let SEAL write the key into it, then append the header."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    try:
        os.fchmod(fd, SECRET_MODE)
    finally:
        os.close(fd)
    secret_key = sa.KeyGenerator(ctx.seal).secret_key()
    secret_key.save(str(path))  # truncates the existing 0600 file; its mode is kept
    body = path.read_bytes()
    if not body:
        raise HEError(f"{path}: SEAL wrote no secret key")
    with path.open("ab") as f:
        f.write(encode_trailer(make_context_header(ctx.he, "secret", body, created_at)))
        f.flush()
        os.fsync(f.fileno())
    return secret_key


def key_ceremony(he_config: HEConfig, out_dir: Path | str, *, max_sites: int | None = None,
                 required_magnitude: float = DEFAULT_REQUIRED_MAGNITUDE) -> CeremonyResult:
    """Make the federation's key once and write the four files; refuses to overwrite any of them.

    Refuses parameters that break the 128-bit bound (HEConfig and
    ``ParamsContext`` both check) or whose sum over ``max_sites`` sites could
    overflow for values of ``required_magnitude`` (packed updates sum to at
    most 1).  Ends with a self-test:
    the written secret context is reloaded, has the key check value of the key
    made in memory, and decrypts what it encrypted.
    """
    max_sites = max_sites or he_config.max_sites
    limit = check_headroom(he_config, max_sites, required_magnitude)
    ctx = ParamsContext.from_config(he_config)
    check_packing(ctx, ParamLayout((TensorSpec("probe", (1,), "float64"),), 1.0, he_config.max_patients, max_sites))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {name: out / name for name in (SECRET_NAME, PARAMS_NAME, FINGERPRINT_NAME, KEY_CHECK_NAME)}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise ContextFileError(out, f"refusing to overwrite existing key material: {', '.join(existing)}")
    created = _now()
    made = key_check_value(_write_secret(paths[SECRET_NAME], ctx, created), ctx.fingerprint)
    _write_public(paths[PARAMS_NAME], params_context_bytes(he_config, created))
    _write_public(paths[FINGERPRINT_NAME],
                  f"{ctx.fingerprint}\n# {he_summary(he_config)}, packing complex2+count, created {created}\n"
                  f"# parameters only: the same for every key made with these settings; the key's own check "
                  f"value is in {KEY_CHECK_NAME}\n".encode())
    secret = load_secret_context(paths[SECRET_NAME])
    if secret.key_check_value != made:
        raise HEError("key ceremony self-test failed: the secret context as written does not hold the key made")
    _write_public(paths[KEY_CHECK_NAME],
                  key_check_bytes(make_key_check(made, ctx.fingerprint, he_summary(he_config), created)))
    probe = np.linspace(-1.0, 1.0, 17)  # one site's worth: check_headroom made sure a sum of 1 fits
    if not np.allclose(decrypt_vector(secret, encrypt_vector(secret, probe, max_sites=1), 17), probe, atol=1e-4):
        raise HEError("key ceremony self-test failed: the new key does not decrypt what it encrypts")
    log.info("key ceremony done in %s: %s, fingerprint %s, key check value %s", out, he_summary(he_config),
             ctx.fingerprint, short_kcv(made))
    return CeremonyResult(paths[SECRET_NAME], paths[PARAMS_NAME], paths[FINGERPRINT_NAME], ctx.fingerprint, limit,
                          paths[KEY_CHECK_NAME], made)

