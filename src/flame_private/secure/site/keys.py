"""The site's secret context: loading the shared CKKS secret key, and the names of the ceremony's files.

SITE-ONLY (and key custodian).  The federation's server must never import this
module (nor anything in ``secure/site``); ``secure/public`` gives it everything it
needs.  The key is made once by ``ceremony.key_ceremony``; the secret context is
the container of ``secure.public.context_file`` with the secret key as its body,
at the start of the file, so SEAL loads it straight from its own file.
"""

from __future__ import annotations

import hashlib
import logging
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import tenseal.sealapi as sa

from flame_private.secure.public.context_file import check_header_parameters, read_context_header
from flame_private.secure.public.errors import ContextFileError
from flame_private.secure.public.params import ParamsContext, he_summary
from flame_private.secure.site.keycheck import key_check_value

log = logging.getLogger(__name__)

SECRET_NAME = "site-secret.ctx"
PARAMS_NAME = "server-params.ctx"
FINGERPRINT_NAME = "he-fingerprint.txt"
KEY_CHECK_NAME = "he-key-check.json"
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


class KeyPermissionError(ContextFileError):
    """A secret context is readable by group or others: refused until the mode is fixed."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(path, f"secret context has mode {mode:04o}: group or others can read the key; "
                               f"run `chmod 600 {path}` (and check who copied it) before using it")
        self.mode = mode


@dataclass(frozen=True, eq=False)
class SecretContext:
    """The shared CKKS secret key with its parameters; repr never shows the key."""

    params: ParamsContext
    secret_key: sa.SecretKey = field(repr=False)
    path: Path | None = None

    @cached_property
    def fingerprint(self) -> str:
        """The parameters' fingerprint: the same for every key made with these parameters."""
        return self.params.fingerprint

    @cached_property
    def key_check_value(self) -> str:
        """The key check value (64 hex digits): identifies this key, reveals nothing of it."""
        return key_check_value(self.secret_key, self.params.fingerprint)



def load_secret_context(path: Path | str) -> SecretContext:
    """Load a site's secret context; refuses a file others can read, a params-only file, or a damaged one."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ContextFileError(path, "secret context not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise ContextFileError(path, "secret context is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        log.error("refusing secret context %s: mode %04o", path, mode)
        raise KeyPermissionError(path, mode)
    header = read_context_header(path)
    if header.kind != "secret":
        raise ContextFileError(path, "this is the server's params-only context: it holds no secret key "
                                     "and cannot encrypt or decrypt; sites need the secret context")
    ctx = check_header_parameters(path, header)
    with path.open("rb") as f:
        body = f.read(header.body_bytes)
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise ContextFileError(path, "corrupt secret context (key checksum mismatch)")
    del body
    secret_key = sa.SecretKey()
    try:
        secret_key.load(ctx.seal, str(path))
    except (RuntimeError, ValueError) as exc:
        raise ContextFileError(path, f"SEAL cannot load the secret key ({exc})") from None
    if secret_key.parms_id() != ctx.seal.key_parms_id():
        raise ContextFileError(path, "secret key does not belong to the parameters in its header")
    log.info("loaded secret context %s (%s, fingerprint %s)", path, he_summary(ctx.he), ctx.fingerprint[:16])
    return SecretContext(params=ctx, secret_key=secret_key, path=path)

