"""Ciphertext envelopes: the header sent with every payload, and the checks made before SEAL sees the bytes.

SERVER-SAFE (``secure/public``): the server checks every site's update with
these functions, and sites check the server's sum with the same ones.

A ciphertext payload is the concatenation of SEAL-serialised ciphertexts, one
per chunk; each starts with SEAL's 16-byte header (magic 0xA15E, ..., total size),
so the payload splits without extra framing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from collections.abc import Sequence
from typing import Annotated, Final, Literal

import tenseal.sealapi as sa
from pydantic import Field, ValidationError, model_validator

from flame_private.config import StrictModel, Task
from flame_private.secure.public._sealio import scratch
from flame_private.secure.public.errors import CiphertextRejected, HEError, RejectReason
from flame_private.secure.public.params import HexDigest, ParamsContext

log = logging.getLogger(__name__)

ENVELOPE_FORMAT: Final = "flame-private/ciphertext/1"
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_SEAL_COMPR_MODES = {0, 1, 2}  # none, zlib, zstd
DEFAULT_MAX_PAYLOAD_BYTES = 2**31 - 1
"""Flower's message cap (docs/references.md 9); anything bigger cannot be an honest reply."""

Content = Literal["model", "metrics"]
"""What a ciphertext holds: model weights (a site's update, the global model) or metric sums (an evaluation)."""
LEGACY_METRICS_PREFIX = "metrics:"
"""Model-name prefix of metric sums: still written as their label, and how headers written before ``content``
existed are recognised as metrics."""


def envelope_model(task: str, content: Content) -> str:
    """The ``model`` name a header carries for ``task``: the task for weights, ``metrics:<task>`` for metric sums.

    The name is a label a person reads in logs; what a header holds is its
    ``content`` field, and that is what every check (strategy, sites, egress log,
    audit) uses.
    """
    return task if content == "model" else LEGACY_METRICS_PREFIX + task


class CiphertextEnvelope(StrictModel):
    """Header sent with every ciphertext payload; the server and sites check it before parsing bytes."""

    format: Literal["flame-private/ciphertext/1"] = ENVELOPE_FORMAT
    kind: Literal["update", "aggregate"]
    run_id: Annotated[str, Field(min_length=1, max_length=128)]
    task: Task
    round: Annotated[int, Field(ge=0)]
    model: Annotated[str, Field(min_length=1, max_length=128)]
    layout_sha256: HexDigest
    """Names, shapes and dtypes of the packed tensors (packing.ParamLayout.sha256)."""
    n_params: Annotated[int, Field(ge=1)]
    n_chunks: Annotated[int, Field(ge=1)]
    slots_per_chunk: Annotated[int, Field(ge=1)]
    he_fingerprint: HexDigest
    payload_sha256: HexDigest
    n_bytes: Annotated[int, Field(ge=1)]
    contributors: Annotated[int, Field(ge=1)] = 1
    """Sites summed into this payload (1 for an update)."""
    contributor_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list)
    """Site ids summed into this payload: the sender's own for an update, every contributor's for an aggregate.
    Lets each site check that no site was counted twice towards ``min_sites``."""
    content: Content = "model"
    """What the payload holds: model weights (an update or the global model) or metric sums (an evaluation)."""

    @model_validator(mode="before")
    @classmethod
    def _content_of_older_headers(cls, data: object) -> object:
        """Headers written before ``content`` existed (egress logs, checkpoints) said "metrics" in the name only."""
        if (isinstance(data, dict) and "content" not in data
                and str(data.get("model", "")).startswith(LEGACY_METRICS_PREFIX)):
            return {**data, "content": "metrics"}
        return data


def parse_envelope(raw: object) -> CiphertextEnvelope:
    """Validate a header received as a mapping or JSON text."""
    try:
        if isinstance(raw, CiphertextEnvelope):
            return raw
        if isinstance(raw, (str, bytes)):
            return CiphertextEnvelope.model_validate_json(raw)
        return CiphertextEnvelope.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CiphertextRejected("header", f"invalid header field {'.'.join(map(str, first['loc']))}: "
                                           f"{first['msg']}") from None


def _reject(reason: RejectReason, detail: str, source: str) -> CiphertextRejected:
    log.warning("rejected ciphertext from %s: %s (%s)", source, detail, reason)
    return CiphertextRejected(reason, detail)


def split_payload(payload: bytes, source: str = "?") -> list[bytes]:
    """Split a payload into its SEAL-serialised chunks, checking each SEAL header before SEAL sees it."""
    chunks: list[bytes] = []
    offset = 0
    view = memoryview(payload)
    while offset < len(payload):
        if len(payload) - offset < _SEAL_HEADER.size:
            raise _reject("truncated", f"payload ends inside a chunk header at byte {offset}", source)
        magic, hsize, major, _minor, compr, _res, size = _SEAL_HEADER.unpack_from(payload, offset)
        if magic != _SEAL_MAGIC or hsize != _SEAL_HEADER.size or major != 4 or compr not in _SEAL_COMPR_MODES:
            raise _reject("garbage", f"chunk {len(chunks)} at byte {offset} is not a SEAL object", source)
        if size <= _SEAL_HEADER.size:
            raise _reject("garbage", f"chunk {len(chunks)} declares an impossible size {size}", source)
        if offset + size > len(payload):
            raise _reject("truncated", f"chunk {len(chunks)} declares {size} bytes, only "
                                       f"{len(payload) - offset} remain", source)
        chunks.append(bytes(view[offset:offset + size]))
        offset += size
    return chunks


def load_ciphertexts(payload: bytes, ctx: ParamsContext, n_chunks: int | None = None, *,
                     max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, source: str = "?") -> list[sa.Ciphertext]:
    """Parse a payload into SEAL ciphertexts valid for ``ctx``; every failure is a CiphertextRejected."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise _reject("garbage", f"payload is {type(payload).__name__}, not bytes", source)
    payload = bytes(payload)
    limit = max_bytes if n_chunks is None else min(max_bytes, n_chunks * ctx.max_chunk_bytes())
    if len(payload) > limit:
        raise _reject("oversized", f"{len(payload)} bytes exceed the limit of {limit}", source)
    if not payload:
        raise _reject("truncated", "empty payload", source)
    pieces = split_payload(payload, source)
    if n_chunks is not None and len(pieces) != n_chunks:
        raise _reject("chunk_count", f"{len(pieces)} chunks, header says {n_chunks}", source)
    out: list[sa.Ciphertext] = []
    first_parms = ctx.seal.first_parms_id()
    with scratch() as f:
        for i, piece in enumerate(pieces):
            f.write(piece)
            ct = sa.Ciphertext()
            try:
                ct.load(ctx.seal, f.path)
            except (RuntimeError, ValueError) as exc:
                raise _reject("params", f"chunk {i} is not a valid ciphertext for these CKKS parameters "
                                        f"(other parameters or corrupted bytes: {exc})", source) from None
            if (ct.size() != 2 or ct.parms_id() != first_parms or not ct.is_ntt_form()
                    or ct.poly_modulus_degree() != ctx.he.poly_modulus_degree):
                raise _reject("params", f"chunk {i} has size {ct.size()} / level / degree other than expected",
                              source)
            if not math.isclose(ct.scale, ctx.scale, rel_tol=1e-9):
                raise _reject("params", f"chunk {i} has scale {ct.scale:.6g}, expected 2^{ctx.he.scale_bits}",
                              source)
            out.append(ct)
    return out


def validate_envelope(envelope: CiphertextEnvelope | dict | str | bytes, payload: bytes, ctx: ParamsContext, *,
                      run_id: str, task: str, round: int, kind: Literal["update", "aggregate"] = "update",
                      model: str | None = None, content: Content | None = None, n_params: int | None = None,
                      layout_sha256: str | None = None,
                      max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, source: str = "?") -> list[sa.Ciphertext]:
    """Check a header against what this round expects and the payload against the header, then parse it.

    Cheap checks first (size cap, header fields), hashing next, SEAL parsing
    last.  Returns the ciphertexts so the caller parses only once.  Every refusal
    is logged with its reason and raised as CiphertextRejected; nothing crashes.
    """
    if isinstance(payload, (bytes, bytearray, memoryview)) and len(payload) > max_bytes:
        raise _reject("oversized", f"{len(payload)} bytes exceed the limit of {max_bytes}", source)
    try:
        env = parse_envelope(envelope)
    except CiphertextRejected as exc:
        raise _reject(exc.reason, exc.detail, source) from None
    expect: list[tuple[RejectReason, str, object, object]] = [
        ("fingerprint", "HE fingerprint", env.he_fingerprint, ctx.fingerprint),
        ("kind", "kind", env.kind, kind),
        ("run", "run id", env.run_id, run_id),
        ("task", "task", env.task, task),
        ("round", "round", env.round, round),
    ]
    if model is not None:
        expect.append(("model", "model", env.model, model))
    if content is not None:
        expect.append(("model", "content", env.content, content))
    if n_params is not None:
        expect.append(("layout", "parameter count", env.n_params, n_params))
    if layout_sha256 is not None:
        expect.append(("layout", "parameter layout", env.layout_sha256, layout_sha256))
    for reason, what, got, want in expect:
        if got != want:
            shown = (f"{str(got)[:16]}..., expected {str(want)[:16]}..." if reason == "fingerprint"
                     else f"{got!r}, expected {want!r}")
            raise _reject(reason, f"{what} is {shown}", source)
    if env.slots_per_chunk != ctx.slots:
        raise _reject("params", f"{env.slots_per_chunk} slots per chunk, these parameters have {ctx.slots}", source)
    want_chunks = ctx.update_chunks(env.n_params)
    if env.n_chunks != want_chunks:
        raise _reject("chunk_count", f"header says {env.n_chunks} chunks, {env.n_params} parameters "
                                     f"need {want_chunks}", source)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise _reject("garbage", f"payload is {type(payload).__name__}, not bytes", source)
    if len(payload) > env.n_chunks * ctx.max_chunk_bytes():
        raise _reject("oversized", f"{len(payload)} bytes is more than {env.n_chunks} chunks can take", source)
    if len(payload) != env.n_bytes:
        raise _reject("length", f"payload has {len(payload)} bytes, header says {env.n_bytes}", source)
    if hashlib.sha256(payload).hexdigest() != env.payload_sha256:
        raise _reject("checksum", "payload sha256 does not match the header", source)
    return load_ciphertexts(bytes(payload), ctx, env.n_chunks, max_bytes=max_bytes, source=source)


def make_envelope(*, kind: Literal["update", "aggregate"], run_id: str, task: str, round: int, model: str,
                  layout_sha256: str, n_params: int, ctx: ParamsContext, payload: bytes,
                  contributors: int = 1, contributor_ids: Sequence[str] = (),
                  content: Content = "model") -> CiphertextEnvelope:
    """Header describing ``payload``; used by sites for updates and by the server for the aggregate."""
    return CiphertextEnvelope(kind=kind, run_id=run_id, task=task, round=round, model=model,  # type: ignore[arg-type]
                              layout_sha256=layout_sha256, n_params=n_params, n_chunks=ctx.update_chunks(n_params),
                              slots_per_chunk=ctx.slots, he_fingerprint=ctx.fingerprint,
                              payload_sha256=hashlib.sha256(payload).hexdigest(), n_bytes=len(payload),
                              contributors=contributors, contributor_ids=list(contributor_ids), content=content)


def check_contributors(env: CiphertextEnvelope, min_sites: int, max_sites: int) -> None:
    """An aggregate must sum ``min_sites`` to ``max_sites`` distinct sites, and say which.

    Fewer than ``min_sites`` and a site could learn another's update from the sum
    (one site counted twice is the same leak); more than ``max_sites`` and the
    sum may have overflowed the headroom the parameters were sized for.
    """
    ids = env.contributor_ids
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise HEError(f"the {env.kind} counts site(s) {', '.join(dupes)} more than once")
    if len(ids) != env.contributors:
        raise HEError(f"the {env.kind} says {env.contributors} contributor(s) but names {len(ids)}")
    if not min_sites <= env.contributors <= max_sites:
        raise HEError(f"the {env.kind} sums {env.contributors} site(s); between {min_sites} and {max_sites} "
                      "are required")
