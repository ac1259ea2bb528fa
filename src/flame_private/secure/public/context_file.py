"""Context files: the container the key ceremony writes, and loading the server's params-only context.

SERVER-SAFE (``secure/public``): the header of any context file (params-only or
secret) is read without touching its body; only a params-only body is ever loaded
here.  Secret contexts are loaded by ``secure.site.keys``.

Files (both kinds share one container, written by ``secure.site.ceremony``)::

    body            SEAL serialisation: EncryptionParameters (params-only) or SecretKey (secret)
    header          UTF-8 JSON (ContextHeader): kind, CKKS parameters, fingerprint, body sha256
    footer          8-byte little-endian header length, then the magic b"FLAMEHE\\x01"

The body comes first because ``tenseal.sealapi`` loads only from a path and
reads from the start of the file: the secret key is loaded from its own file and
never copied anywhere.  The header is at the end so any tool can read the kind
and fingerprint without touching the body.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from pathlib import Path
from typing import Annotated, Final, Literal

import tenseal.sealapi as sa
from pydantic import Field, ValidationError

from flame_private.config import HEConfig, StrictModel
from flame_private.secure.public._sealio import save_bytes, scratch
from flame_private.secure.public.errors import ContextFileError, HEError
from flame_private.secure.public.params import HexDigest, ParamsContext, he_fingerprint, he_summary

log = logging.getLogger(__name__)

CONTEXT_FORMAT: Final = "flame-private/he-context"
FOOTER_MAGIC = b"FLAMEHE\x01"
_FOOTER = struct.Struct("<Q8s")
_MAX_HEADER_JSON = 64 * 1024


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
