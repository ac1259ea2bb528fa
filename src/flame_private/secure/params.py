"""CKKS parameters, params-only contexts, ciphertext headers and the server's sum.

SERVER-SAFE.  This module is everything the aggregation server needs: it can
deserialise ciphertexts, check them and add them, and nothing here loads, makes
or accepts a secret key (it never imports ``keys`` or ``codec``; a test checks
that in a fresh interpreter).  Sites use the same functions to check what the
server sends back.

Files (both kinds share one container, written by ``keys.key_ceremony``)::

    body            SEAL serialisation: EncryptionParameters (params-only) or SecretKey (secret)
    header          UTF-8 JSON (ContextHeader): kind, CKKS parameters, fingerprint, body sha256
    footer          8-byte little-endian header length, then the magic b"FLAMEHE\\x01"

The body comes first because ``tenseal.sealapi`` loads only from a path and
reads from the start of the file: the secret key is loaded from its own file and
never copied anywhere.  The header is at the end so any tool can read the kind
and fingerprint without touching the body.

A ciphertext payload is the concatenation of SEAL-serialised ciphertexts, one
per chunk; each starts with SEAL's 16-byte header (magic 0xA15E, ..., total size),
so the payload splits without extra framing.  Parameters are complex-packed:
a chunk carries ``poly_modulus_degree`` reals in ``poly_modulus_degree / 2`` slots;
an update or aggregate ends with one more chunk holding the count
(``ParamsContext.update_chunks``; packing.py says what the values mean).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tenseal.sealapi as sa
from pydantic import Field, ValidationError

from flame_private.config import HEConfig, StrictModel, Task
from flame_private.secure._sealio import fork_map, save_bytes, scratch
from flame_private.secure.errors import CiphertextRejected, ContextFileError, HEConfigError, HEError, RejectReason

log = logging.getLogger(__name__)

PACKING = "flame-complex2-scaled-countchunk/2"
"""Packing scheme, part of the fingerprint: two reals per complex slot, values scaled by the public bounds
(n_k * w_k / (W * C)), the count in a chunk of its own (packing.py)."""
CONTEXT_FORMAT = "flame-private/he-context"
ENVELOPE_FORMAT = "flame-private/ciphertext/1"
FOOTER_MAGIC = b"FLAMEHE\x01"
_FOOTER = struct.Struct("<Q8s")
_MAX_HEADER_JSON = 64 * 1024
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_SEAL_COMPR_MODES = {0, 1, 2}  # none, zlib, zstd
DEFAULT_MAX_PAYLOAD_BYTES = 2**31 - 1
"""Flower's message cap (docs/references.md 9); anything bigger cannot be an honest reply."""

HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


# --------------------------------------------------------------------------- parameters


def he_summary(he: HEConfig) -> str:
    """Human-readable one-liner of the parameters, for logs and the fingerprint file."""
    return f"CKKS N={he.poly_modulus_degree} coeff={list(he.coeff_mod_bit_sizes)} scale=2^{he.scale_bits}"


def check_he_config(he: HEConfig) -> None:
    """Re-check the 128-bit bound and the scale headroom (HEConfig does too; this guards copies built otherwise)."""
    from flame_private.config import HE_MAX_MODULUS_BITS

    bound = HE_MAX_MODULUS_BITS.get(he.poly_modulus_degree)
    total = sum(he.coeff_mod_bit_sizes)
    if bound is None or total > bound:
        raise HEConfigError(f"{he_summary(he)}: {total} modulus bits break the 128-bit security bound "
                            f"({bound} bits for N={he.poly_modulus_degree})")
    if he.scale_bits > min(he.coeff_mod_bit_sizes) - 2:
        raise HEConfigError(f"{he_summary(he)}: scale must be <= 2^(smallest prime bits - 2)")


def build_encryption_parameters(he: HEConfig) -> sa.EncryptionParameters:
    """SEAL CKKS parameters from the config; the primes are chosen deterministically by SEAL."""
    check_he_config(he)
    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(he.poly_modulus_degree)
    try:
        parms.set_coeff_modulus(sa.CoeffModulus.Create(he.poly_modulus_degree, list(he.coeff_mod_bit_sizes)))
    except (RuntimeError, ValueError) as exc:
        raise HEConfigError(f"{he_summary(he)}: SEAL cannot make these primes ({exc})") from None
    return parms


def he_fingerprint(he: HEConfig) -> str:
    """sha256 of the canonical parameters: the actual primes, N, the scale and the packing scheme.

    Everyone (custodian, sites, server) computes it independently and compares it
    out of band; a ciphertext whose header carries another fingerprint is refused.
    """
    primes = [m.value() for m in build_encryption_parameters(he).coeff_modulus()]
    canonical = {"scheme": "ckks", "poly_modulus_degree": he.poly_modulus_degree, "coeff_modulus": primes,
                 "scale_bits": he.scale_bits, "packing": PACKING}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class ParamsContext:
    """Everything needed to deserialise, check and add ciphertexts; holds no key."""

    he: HEConfig
    parms: sa.EncryptionParameters = field(repr=False)
    seal: sa.SEALContext = field(repr=False)
    fingerprint: str

    @classmethod
    def from_config(cls, he: HEConfig) -> ParamsContext:
        parms = build_encryption_parameters(he)
        seal = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
        if not seal.parameters_set():
            raise HEConfigError(f"{he_summary(he)}: SEAL refuses these parameters "
                                f"({seal.parameters_error_message()})")
        return cls(he=he, parms=parms, seal=seal, fingerprint=he_fingerprint(he))

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext (N / 2)."""
        return self.he.poly_modulus_degree // 2

    @property
    def values_per_chunk(self) -> int:
        """Reals per ciphertext with complex packing (N)."""
        return self.he.poly_modulus_degree

    @property
    def scale(self) -> float:
        return float(2**self.he.scale_bits)

    @property
    def data_modulus(self) -> int:
        """Product of the primes ciphertexts live under (all but the special prime when there are several)."""
        return math.prod(m.value() for m in self.seal.first_context_data().parms().coeff_modulus())

    def n_chunks(self, n_values: int) -> int:
        """Ciphertexts needed for ``n_values`` reals."""
        return max(1, math.ceil(n_values / self.values_per_chunk))

    def update_chunks(self, n_params: int) -> int:
        """Ciphertexts of an update or aggregate of ``n_params`` values: theirs, then the count chunk."""
        return self.n_chunks(n_params) + 1

    def max_chunk_bytes(self) -> int:
        """Upper bound on one serialised chunk: two full polynomials plus generous metadata."""
        n_primes = len(self.seal.first_context_data().parms().coeff_modulus())
        raw = 2 * self.he.poly_modulus_degree * n_primes * 8
        return raw + raw // 64 + 1024


# --------------------------------------------------------------------------- context files


class ContextHeader(StrictModel):
    """The JSON header of a context file: readable without touching the (possibly secret) body."""

    format: Literal["flame-private/he-context"] = CONTEXT_FORMAT
    version: Literal[1] = 1
    kind: Literal["params", "secret"]
    poly_modulus_degree: int
    coeff_mod_bit_sizes: list[int]
    scale_bits: int
    fingerprint: HexDigest
    body_bytes: Annotated[int, Field(ge=1)]
    body_sha256: HexDigest
    created_at: str

    def he_config(self) -> HEConfig:
        return HEConfig(poly_modulus_degree=self.poly_modulus_degree,  # type: ignore[arg-type]
                        coeff_mod_bit_sizes=list(self.coeff_mod_bit_sizes), scale_bits=self.scale_bits)


def make_context_header(he: HEConfig, kind: Literal["params", "secret"], body: bytes, created_at: str) -> ContextHeader:
    return ContextHeader(kind=kind, poly_modulus_degree=he.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(he.coeff_mod_bit_sizes), scale_bits=he.scale_bits,
                         fingerprint=he_fingerprint(he), body_bytes=len(body),
                         body_sha256=hashlib.sha256(body).hexdigest(), created_at=created_at)


def encode_trailer(header: ContextHeader) -> bytes:
    """Header JSON plus footer, appended after the body."""
    raw = header.model_dump_json().encode()
    return raw + _FOOTER.pack(len(raw), FOOTER_MAGIC)


def read_context_header(path: Path | str) -> ContextHeader:
    """Read and check a context file's header only; the body (maybe a secret key) is not read."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size < _FOOTER.size:
                raise ContextFileError(path, "too short to be a flame-private HE context file")
            f.seek(size - _FOOTER.size)
            json_len, magic = _FOOTER.unpack(f.read(_FOOTER.size))
            if magic != FOOTER_MAGIC:
                raise ContextFileError(path, "not a flame-private HE context file (bad magic)")
            if json_len > min(_MAX_HEADER_JSON, size - _FOOTER.size):
                raise ContextFileError(path, "corrupt context file (header length out of range)")
            f.seek(size - _FOOTER.size - json_len)
            raw = f.read(json_len)
    except FileNotFoundError:
        raise ContextFileError(path, "file not found") from None
    except OSError as exc:
        raise ContextFileError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        header = ContextHeader.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ContextFileError(path, f"corrupt context header ({exc.__class__.__name__})") from None
    if header.body_bytes != size - _FOOTER.size - json_len:
        raise ContextFileError(path, "corrupt context file (body length does not match its header)")
    return header


def check_header_parameters(path: Path | str, header: ContextHeader) -> ParamsContext:
    """Rebuild the SEAL context from a header and check the fingerprint it claims."""
    try:
        he = header.he_config()
    except ValidationError as exc:
        raise ContextFileError(path, f"parameters refused: {exc.errors()[0]['msg']}") from None
    try:
        ctx = ParamsContext.from_config(he)
    except HEError as exc:
        raise ContextFileError(path, str(exc)) from None
    if ctx.fingerprint != header.fingerprint:
        raise ContextFileError(path, "fingerprint in the header does not match its parameters (a file of "
                                     "another packing version or a damaged one: run the key ceremony again)")
    return ctx


def serialize_params(ctx: ParamsContext) -> bytes:
    """SEAL's serialisation of the encryption parameters (~70 bytes)."""
    with scratch() as f:
        return save_bytes(ctx.parms.save, f)


def params_context_bytes(he: HEConfig, created_at: str) -> bytes:
    """A whole params-only context file: SEAL parameters, header, footer; no key of any kind."""
    ctx = ParamsContext.from_config(he)
    body = serialize_params(ctx)
    return body + encode_trailer(make_context_header(he, "params", body, created_at))


def load_params_context(path: Path | str) -> ParamsContext:
    """Load the server's params-only context; refuses a secret context (it must never be on the server)."""
    path = Path(path)
    header = read_context_header(path)
    if header.kind != "params":
        raise ContextFileError(path, "this is a site SECRET context; the server must hold only the "
                                     "params-only context (remove this file from the server)")
    ctx = check_header_parameters(path, header)
    body = path.read_bytes()[: header.body_bytes]
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise ContextFileError(path, "corrupt context file (body checksum mismatch)")
    loaded = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    try:
        with scratch() as f:
            f.write(body)
            loaded.load(f.path)
    except (RuntimeError, ValueError) as exc:
        raise ContextFileError(path, f"SEAL cannot read the parameters ({exc})") from None
    if loaded != ctx.parms:
        raise ContextFileError(path, "SEAL parameters in the file differ from those its header names")
    log.info("loaded params-only context %s (%s, fingerprint %s)", path, he_summary(ctx.he), ctx.fingerprint[:16])
    return ctx


def context_kind(path: Path | str) -> Literal["params", "secret"] | None:
    """The kind of a context file (from its header, body untouched); None for a file that is not one."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - len(FOOTER_MAGIC)))
            tail = f.read()
    except FileNotFoundError:
        raise ContextFileError(path, "file not found") from None
    except OSError as exc:
        raise ContextFileError(path, f"cannot read ({exc.strerror or exc})") from None
    return read_context_header(path).kind if tail == FOOTER_MAGIC else None


def read_fingerprint(path: Path | str) -> str:
    """Parameters' fingerprint of a context file (read from its header, body untouched) or of a fingerprint file."""
    path = Path(path)
    if context_kind(path) is not None:
        return read_context_header(path).fingerprint
    try:
        first = path.read_text(encoding="ascii").split("\n", 1)[0].strip()
    except (UnicodeDecodeError, OSError):
        first = ""
    if len(first) == 64 and all(c in "0123456789abcdef" for c in first):
        return first
    raise ContextFileError(path, "neither a context file nor a fingerprint file")


# --------------------------------------------------------------------------- envelopes


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
                      model: str | None = None, n_params: int | None = None, layout_sha256: str | None = None,
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


# --------------------------------------------------------------------------- the server's sum


def serialize_ciphertexts(cts: Sequence[sa.Ciphertext], workers: int | None = None) -> bytes:
    """Concatenate SEAL serialisations (zstd-compressed by SEAL), split over ``workers`` forked processes
    (``_sealio.fork_map``; default: this process's CPUs), which inherit the ciphertexts and send back bytes."""

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


def make_envelope(*, kind: Literal["update", "aggregate"], run_id: str, task: str, round: int, model: str,
                  layout_sha256: str, n_params: int, ctx: ParamsContext, payload: bytes,
                  contributors: int = 1, contributor_ids: Sequence[str] = ()) -> CiphertextEnvelope:
    """Header describing ``payload``; used by sites for updates and by the server for the aggregate."""
    return CiphertextEnvelope(kind=kind, run_id=run_id, task=task, round=round, model=model,  # type: ignore[arg-type]
                              layout_sha256=layout_sha256, n_params=n_params, n_chunks=ctx.update_chunks(n_params),
                              slots_per_chunk=ctx.slots, he_fingerprint=ctx.fingerprint,
                              payload_sha256=hashlib.sha256(payload).hexdigest(), n_bytes=len(payload),
                              contributors=contributors, contributor_ids=list(contributor_ids))


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


def aggregate_updates(updates: Sequence[tuple[CiphertextEnvelope, bytes]], ctx: ParamsContext, *,
                      min_contributors: int = 3, max_contributors: int | None = None,
                      parsed: Sequence[list[sa.Ciphertext]] | None = None) -> tuple[CiphertextEnvelope, bytes]:
    """Sum already-validated updates of one round into the aggregate and its header.

    Refuses fewer than ``min_contributors`` (with two sites each learns the
    other's update from the sum), more than ``max_contributors`` (default: the
    parameters' ``max_sites``, which the overflow headroom is sized for), a site
    named twice, and updates that disagree on run, task, round, model or layout.
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
    keys = ("run_id", "task", "round", "model", "layout_sha256", "n_params", "n_chunks", "he_fingerprint")
    for env, _ in updates[1:]:
        for key in keys:
            if getattr(env, key) != getattr(first, key):
                raise HEError(f"updates disagree on {key}: {getattr(env, key)!r} vs {getattr(first, key)!r}")
    payload = add_ciphertexts(list(parsed) if parsed is not None else [p for _, p in updates], ctx)
    env = make_envelope(kind="aggregate", run_id=first.run_id, task=first.task, round=first.round,
                        model=first.model, layout_sha256=first.layout_sha256, n_params=first.n_params, ctx=ctx,
                        payload=payload, contributors=sum(e.contributors for e, _ in updates),
                        contributor_ids=sorted(ids))
    log.info("aggregated %d updates (%s round %d): %d bytes", len(updates), first.task, first.round, len(payload))
    return env, payload
