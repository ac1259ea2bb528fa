"""c. The secret key in memory or on disk: does anything the server holds contain it?

A fresh process importing only the server-side modules (``probe.py``) loads
all the server holds and scans its own memory for a run of the secret key's
coefficients; the server's files are scanned for those and for the key's
serialised bytes.  Control: the same process, also loading the site's secret
context, and the same file scan over a site's folder, find it.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flame_private.attacks.curious_server.recorded_federation import Federation
from flame_private.attacks.curious_server.settings import (
    KEY_WORDS,
    KEY_WORDS_AT,
    SERIALISED_SIGNATURE_BYTES,
)
from flame_private.secure.public.context_file import read_context_header
from flame_private.secure.site.keys import SecretContext

PROBE_MODULE = "flame_private.attacks.curious_server.probe"
"""Run with ``python -m``: the package ``__init__`` it passes through imports nothing, so the probe loads only
the server's modules."""


@dataclass(frozen=True)
class KeySignature:
    words: tuple[int, ...]
    """Consecutive NTT coefficients of the secret key, as held in memory."""
    serialised: bytes
    """A run of the key's serialised (compressed) bytes, as held in a file."""

    @property
    def raw(self) -> bytes:
        return struct.pack(f"<{len(self.words)}Q", *self.words)


def key_signature(secret: SecretContext, secret_file: Path) -> KeySignature:
    data = secret.secret_key.data().dyn_array()
    words = tuple(int(data.at(i)) for i in range(KEY_WORDS_AT, KEY_WORDS_AT + KEY_WORDS))
    body = secret_file.read_bytes()[: read_context_header(secret_file).body_bytes]
    middle = len(body) // 2
    return KeySignature(words=words, serialised=body[middle:middle + SERIALISED_SIGNATURE_BYTES])


def scan_files(files: Sequence[Path], sig: KeySignature) -> int:
    hits = 0
    for path in files:
        data = path.read_bytes()
        hits += data.count(sig.serialised) + data.count(sig.raw)
    return hits


def probe_server_process(fed: Federation, sig: KeySignature, secret_file: Path | None = None) -> dict[str, Any]:
    """Run the server's side alone in a fresh interpreter and let it scan its own memory."""
    cmd = [sys.executable, "-m", PROBE_MODULE, "--params", str(fed.server_params),
           "--server-dir", str(fed.server_dir), "--words", ",".join(f"{w:x}" for w in sig.words)]
    if secret_file is not None:
        cmd += ["--secret", str(secret_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the server-process probe failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

