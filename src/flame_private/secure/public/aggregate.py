"""The server's whole job: add the sites' ciphertexts, with no key.

SERVER-SAFE (``secure/public``): addition needs no relinearisation or Galois key,
and certainly no secret key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import tenseal.sealapi as sa

from flame_private.secure.public._sealio import fork_map, save_bytes, scratch
from flame_private.secure.public.envelope import (
    CiphertextEnvelope,
    _reject,
    load_ciphertexts,
    make_envelope,
)
from flame_private.secure.public.errors import HEError
from flame_private.secure.public.params import ParamsContext

log = logging.getLogger(__name__)


def serialize_ciphertexts(cts: Sequence[sa.Ciphertext], workers: int | None = None) -> bytes:
    """Concatenate SEAL serialisations (zstd-compressed by SEAL), split over ``workers`` forked processes
    (``_sealio.fork_map``; default: ``FLAME_HE_WORKERS``, else one), which inherit the ciphertexts and send back
    bytes."""

    def block(lo: int, hi: int) -> bytes:
        with scratch() as f:
            return b"".join(save_bytes(ct.save, f) for ct in cts[lo:hi])

    return b"".join(fork_map(block, len(cts), workers))


def add_ciphertexts(payloads: Sequence[bytes | list[sa.Ciphertext]], ctx: ParamsContext) -> bytes:
    """The server's whole job: chunk-wise sum of several payloads, with no key.

    Each payload is parsed and checked as in ``load_ciphertexts`` (or given
    already parsed, e.g. by ``validate_envelope``: then it is not parsed twice);
    all must have the same number of chunks.  Addition needs no relinearisation
    or Galois key.  Parsed ciphertexts given are added into, not copied.
    """
    if not payloads:
        raise HEError("nothing to add")

    def parsed(i: int, n_chunks: int | None) -> list[sa.Ciphertext]:
        p = payloads[i]
        if isinstance(p, list):
            if n_chunks is not None and len(p) != n_chunks:
                raise _reject("chunk_count", f"{len(p)} chunks, expected {n_chunks}", f"payload {i}")
            return p
        return load_ciphertexts(p, ctx, n_chunks, source=f"payload {i}")

    evaluator = sa.Evaluator(ctx.seal)
    total = parsed(0, None)
    for i in range(1, len(payloads)):
        for acc, ct in zip(total, parsed(i, len(total)), strict=True):
            evaluator.add_inplace(acc, ct)
    return serialize_ciphertexts(total)


def aggregate_updates(updates: Sequence[tuple[CiphertextEnvelope, bytes]], ctx: ParamsContext, *,
                      min_contributors: int = 3, max_contributors: int | None = None,
                      parsed: Sequence[list[sa.Ciphertext]] | None = None) -> tuple[CiphertextEnvelope, bytes]:
    """Sum already-validated updates of one round into the aggregate and its header.

    Refuses fewer than ``min_contributors`` (with two sites each learns the
    other's update from the sum), more than ``max_contributors`` (default: the
    parameters' ``max_sites``, which the overflow headroom is sized for), a site
    named twice, and updates that disagree on run, task, round, model, content or layout.
    ``parsed``: the ciphertexts ``validate_envelope`` returned for each update,
    in the same order, so that the server parses every payload once.
    """
    if parsed is not None and len(parsed) != len(updates):
        raise HEError(f"{len(parsed)} parsed payloads for {len(updates)} updates")
    limit = ctx.he.max_sites if max_contributors is None else max_contributors
    if len(updates) < min_contributors:
        raise HEError(f"{len(updates)} contributor(s), at least {min_contributors} are required")
    if len(updates) > limit:
        raise HEError(f"{len(updates)} contributor(s), at most {limit} (max_sites) may be added without overflow")
    ids = [i for env, _ in updates for i in env.contributor_ids]
    if len(set(ids)) != len(ids):
        raise HEError(f"site(s) {', '.join(sorted({i for i in ids if ids.count(i) > 1}))} named in more than one "
                      "update")
    first = updates[0][0]
    keys = ("run_id", "task", "round", "model", "content", "layout_sha256", "n_params", "n_chunks", "he_fingerprint")
    for env, _ in updates[1:]:
        for key in keys:
            if getattr(env, key) != getattr(first, key):
                raise HEError(f"updates disagree on {key}: {getattr(env, key)!r} vs {getattr(first, key)!r}")
    payload = add_ciphertexts(list(parsed) if parsed is not None else [p for _, p in updates], ctx)
    env = make_envelope(kind="aggregate", run_id=first.run_id, task=first.task, round=first.round,
                        model=first.model, layout_sha256=first.layout_sha256, n_params=first.n_params, ctx=ctx,
                        payload=payload, contributors=sum(e.contributors for e, _ in updates),
                        contributor_ids=sorted(ids), content=first.content)
    log.info("aggregated %d updates (%s round %d): %d bytes", len(updates), first.task, first.round, len(payload))
    return env, payload
