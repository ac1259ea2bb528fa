"""Site-side encryption and decryption of packed updates, metric sums and raw vectors.

SITE-ONLY: uses the shared secret key.  Encryption is seeded symmetric
(``Encryptor(ctx, secret_key).encrypt_symmetric``): the saved ciphertext is one
polynomial plus a seed, half the size of a public-key ciphertext, and fresher
(smaller noise).  Anyone who can encrypt this way can also decrypt; every site
holds the key anyway (docs/design.md 1).

The range analysis that keeps the sum exact (``max_safe_magnitude`` and friends)
is public arithmetic and lives in ``secure.public.headroom``; this module applies
it before anything is encrypted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import tenseal.sealapi as sa
import torch

from flame_private.secure.public._sealio import fork_map, save_bytes, scratch
from flame_private.secure.public.envelope import (
    CiphertextEnvelope,
    Content,
    check_contributors,
    load_ciphertexts,
    make_envelope,
    parse_envelope,
    validate_envelope,
)
from flame_private.secure.public.errors import PackingError
from flame_private.secure.public.headroom import check_packing, check_range, max_safe_magnitude
from flame_private.secure.public.packing import ParamLayout, from_slots, to_slots, update_vector, weighted_mean
from flame_private.secure.site.keys import SecretContext

log = logging.getLogger(__name__)


def _encrypt_slots(secret: SecretContext, slots: np.ndarray, workers: int | None = None) -> bytes:
    """Encode, encrypt (seeded symmetric) and serialise rows of complex slots, one ciphertext each.

    The rows are split over ``workers`` processes (``_sealio.fork_map``; default:
    this process's CPUs): forked copies of this site process that hold the key
    in memory as this one does and send back ciphertext bytes only.
    """
    ctx = secret.params

    def block(lo: int, hi: int) -> bytes:
        encoder = sa.CKKSEncoder(ctx.seal)
        encryptor = sa.Encryptor(ctx.seal, secret.secret_key)
        pt = sa.Plaintext()
        parts = []
        with scratch() as f:
            for row in slots[lo:hi]:
                encoder.encode(row.tolist(), ctx.scale, pt)
                parts.append(save_bytes(encryptor.encrypt_symmetric(pt).save, f))
        return b"".join(parts)

    return b"".join(fork_map(block, len(slots), workers))


def encrypt_vector(secret: SecretContext, values: np.ndarray, *, max_sites: int | None = None,
                   workers: int | None = None) -> bytes:
    """Encrypt a raw real vector (complex-packed, seeded symmetric); the payload the server can add.

    ``max_sites`` (default: the context's ``HEConfig.max_sites``) sites' worth
    must fit: |values| <= ``max_safe_magnitude``.  Model updates go through
    ``encrypt_update``, whose packing bounds the sum instead.
    """
    ctx = secret.params
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    sites = max_sites or ctx.he.max_sites
    check_range(values, max_safe_magnitude(ctx.he, sites), ctx.he, sites)
    return _encrypt_slots(secret, to_slots(values, ctx.values_per_chunk), workers)


def encrypt_packed(secret: SecretContext, packed: np.ndarray, *, workers: int | None = None) -> bytes:
    """Encrypt an ``update_vector`` (packed values, then the count value in a chunk of its own).

    Every packed value of one site is at most 1 in magnitude and the count value
    at most 1 / M; anything else is not a packed update and is refused.
    """
    ctx = secret.params
    packed = np.asarray(packed, dtype=np.float64).reshape(-1)
    if packed.size < 2:
        raise PackingError("a packed update holds at least one value and the count")
    check_range(packed, 1.0, ctx.he, 1)
    count = packed[-1]
    if not count > 0:
        raise PackingError(f"the count value of a packed update must be positive, got {count!r}")
    slots = to_slots(packed[:-1], ctx.values_per_chunk, extra_rows=1)
    slots[-1] = complex(count)  # the count chunk: every slot holds count + 0j, the constant polynomial `count`
    return _encrypt_slots(secret, slots, workers)


def decrypt_ciphertexts(secret: SecretContext, cts: list[sa.Ciphertext], n_values: int, *,
                        workers: int | None = None) -> np.ndarray:
    """Decrypt already-parsed ciphertexts into the first ``n_values`` reals."""
    return from_slots(_decode(secret, cts, workers), n_values)


def _decode(secret: SecretContext, cts: list[sa.Ciphertext], workers: int | None = None) -> np.ndarray:
    """Decrypt and decode ciphertexts into a ``(len(cts), slots)`` complex array.

    Split over ``workers`` processes like ``_encrypt_slots``: each forked copy
    decrypts the ciphertexts it inherited and sends back decoded values only.
    """
    ctx = secret.params

    def block(lo: int, hi: int) -> bytes:
        encoder = sa.CKKSEncoder(ctx.seal)
        decryptor = sa.Decryptor(ctx.seal, secret.secret_key)
        pt = sa.Plaintext()
        out = np.empty((hi - lo, ctx.slots), dtype=np.complex128)
        for i, ct in enumerate(cts[lo:hi]):
            decryptor.decrypt(ct, pt)
            out[i] = encoder.decode_complex(pt)
        return out.tobytes()

    raw = b"".join(fork_map(block, len(cts), workers))
    return np.frombuffer(raw, dtype=np.complex128).reshape(len(cts), ctx.slots)


def decrypt_packed_ciphertexts(secret: SecretContext, cts: list[sa.Ciphertext], n_params: int, *,
                               workers: int | None = None) -> np.ndarray:
    """Parsed ciphertexts of a packed update or sum -> ``[values (n_params) | count value]``.

    The count chunk holds a constant polynomial; the mean of its slots' real
    parts is that constant plus only the noise of one coefficient.
    """
    if len(cts) != secret.params.update_chunks(n_params):
        raise PackingError(f"{len(cts)} ciphertexts, a packed update of {n_params} values has "
                           f"{secret.params.update_chunks(n_params)}")
    chunks = _decode(secret, cts, workers)
    return np.concatenate([from_slots(chunks[:-1], n_params), [float(np.mean(chunks[-1].real))]])


def decrypt_packed(secret: SecretContext, payload: bytes, n_params: int, *,
                   workers: int | None = None) -> np.ndarray:
    """Decrypt a packed update or sum payload into ``[values | count value]``; malformed bytes are refused."""
    cts = load_ciphertexts(payload, secret.params, secret.params.update_chunks(n_params))
    return decrypt_packed_ciphertexts(secret, cts, n_params, workers=workers)


def decrypt_vector(secret: SecretContext, payload: bytes, n_values: int, *,
                   workers: int | None = None) -> np.ndarray:
    """Decrypt a raw-vector payload (``encrypt_vector``) into ``n_values`` reals; malformed bytes are refused."""
    n_chunks = secret.params.n_chunks(n_values)
    return decrypt_ciphertexts(secret, load_ciphertexts(payload, secret.params, n_chunks), n_values,
                               workers=workers)


def encrypt_update(secret: SecretContext, state_dict: Mapping[str, torch.Tensor], count: int, *, site_id: str,
                   run_id: str, task: str, round: int, model: str, layout: ParamLayout | None = None,
                   max_sites: int | None = None, content: Content = "model",
                   workers: int | None = None) -> tuple[CiphertextEnvelope, bytes]:
    """A site's reply: Enc(packed n_k * w_k) + Enc(count chunk) and its header, which names the site.

    ``layout`` carries the public bounds (``packing``); without one it is made
    from ``state_dict`` with an automatic weight bound and ``max_sites`` (default:
    the context's) sites of at most ``he.max_patients`` patients in all.
    ``content`` says what the state holds: model weights, or metric sums.
    """
    he = secret.params.he
    layout = layout or ParamLayout.from_state_dict(state_dict, count_bound=he.max_patients,
                                                   max_sites=max_sites or he.max_sites,
                                                   value_bound=he.weight_bound)
    check_packing(secret.params, layout)
    payload = encrypt_packed(secret, update_vector(state_dict, layout, count), workers=workers)
    env = make_envelope(kind="update", run_id=run_id, task=task, round=round, model=model,
                        layout_sha256=layout.sha256, n_params=layout.n_params, ctx=secret.params, payload=payload,
                        contributor_ids=[site_id], content=content)
    log.info("encrypted %s update (%s round %d): %d params -> %d bytes (%.2f B/param)", model, task, round,
             layout.n_params, len(payload), len(payload) / layout.n_params)
    return env, payload


def decrypt_aggregate(secret: SecretContext, envelope: CiphertextEnvelope | dict | str | bytes, payload: bytes,
                      layout: ParamLayout, *, run_id: str, task: str, round: int, model: str | None = None,
                      content: Content | None = None, min_sites: int = 3,
                      max_sites: int | None = None, workers: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Check and decrypt the server's sum; returns the FedAvg model and the total patient count.

    Before anything is decrypted: the header must be an aggregate of this run,
    task, ``round``, model and content under the agreed parameters and packing (a stale,
    replayed or foreign sum is refused), summing ``min_sites`` to ``max_sites``
    (default: the layout's) distinct, named sites.  After: the total count must
    be an integer within the layout's bound (else the values may have wrapped).
    """
    check_packing(secret.params, layout)
    env = parse_envelope(envelope)
    check_contributors(env, min_sites, layout.max_sites if max_sites is None else max_sites)
    cts = validate_envelope(env, payload, secret.params, run_id=run_id, task=task, round=round,
                            kind="aggregate", model=model, content=content, n_params=layout.n_params,
                            layout_sha256=layout.sha256,
                            source="server")
    state, total = weighted_mean(decrypt_packed_ciphertexts(secret, cts, layout.n_params, workers=workers), layout)
    log.info("decrypted %s aggregate round %d: %d patients", task, round, total)
    return state, total
