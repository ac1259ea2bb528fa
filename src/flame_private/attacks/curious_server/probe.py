"""The curious server's process, rebuilt alone: load all it holds, then look for the secret key in its own memory.

Run as ``python -m flame_private.attacks.curious_server.probe`` by
``key_search.py``.  In the simulated federation the server shares one
process with the sites (which do hold the key), so its memory cannot be
inspected there; this fresh interpreter holds exactly the server's side:
the server-side modules, the params-only context, the checkpoints, and every
message the server received (ciphertexts parsed and summed again, as the
strategy does).  It then reads its own address space (``/proc/self/maps``,
``/proc/self/mem``) looking for a run of the secret key's coefficients.

The key's signature arrives as separate 64-bit words, never as one byte
string, and is compared word by word: the scanner never writes the pattern
into its own memory, so a hit means the key itself is there.  With
``--secret`` the probe also loads a site's secret context first: the positive
control, which must find it.

SERVER-SAFE by construction: this module imports only what the server imports
(``--secret`` imports the key module late, and the report says so), and the
package ``__init__`` files it passes through import nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from flame_private.federation import protocol  # noqa: F401 - the server's own imports
from flame_private.federation.server import server_app, strategy  # noqa: F401 - the server's own imports
from flame_private.federation.server.checkpoint import SUFFIX, read_checkpoint_file
from flame_private.secure.public.aggregate import aggregate_updates
from flame_private.secure.public.context_file import load_params_context
from flame_private.secure.public.envelope import CiphertextEnvelope, load_ciphertexts, parse_envelope

KEY_PACKAGES = ("flame_private.secure.site", "flame_private.federation.site")
"""Packages that load or use the secret key; no module of theirs may be imported by the server side."""
READ_CHUNK = 16 * 2**20
SKIP_REGIONS = ("[vvar]", "[vsyscall]", "[vvar_vclock]")


def key_modules_loaded() -> list[str]:
    return sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in KEY_PACKAGES))


def scan_own_memory(words: list[int]) -> dict[str, int]:
    """Occurrences of ``words`` (consecutive little-endian uint64, 8-byte aligned) in this process's memory."""
    first = np.uint64(words[0])
    hits = scanned = regions = unreadable = 0
    span = 8 * len(words)
    maps = Path("/proc/self/maps").read_text().splitlines()
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for line in maps:
            parts = line.split()
            if parts[1][0] != "r" or (len(parts) > 5 and parts[5] in SKIP_REGIONS):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            regions += 1
            pos = start
            while pos < end:
                length = min(READ_CHUNK, end - pos)
                try:
                    data = os.pread(fd, min(length + span, end - pos), pos)
                except (OSError, OverflowError):
                    unreadable += 1
                    break
                arr = np.frombuffer(data, dtype="<u8", count=len(data) // 8)
                for i in np.flatnonzero(arr == first):
                    if i * 8 < length and i + len(words) <= arr.size and all(
                            int(arr[i + k]) == words[k] for k in range(1, len(words))):
                        hits += 1
                scanned += min(length, len(data))
                del arr, data
                pos += length
    finally:
        os.close(fd)
    return {"hits": hits, "bytes_scanned": scanned, "regions": regions, "unreadable_regions": unreadable}


def load_server_holdings(params_path: Path, server_dir: Path) -> tuple[list[Any], dict[str, int]]:
    """Everything under ``server_dir`` into memory; ciphertexts parsed, received updates summed again."""
    ctx = load_params_context(params_path)
    held: list[Any] = [ctx]
    counts = {"files": 0, "bytes": 0, "ciphertexts": 0, "sums": 0}
    groups: dict[tuple[str, int, str], list[tuple[CiphertextEnvelope, bytes]]] = defaultdict(list)
    for path in sorted(p for p in server_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        held.append(data)
        counts["files"] += 1
        counts["bytes"] += len(data)
        if path.suffix == SUFFIX:  # the server's own checkpoint: header and payload in one file
            head_text, data = read_checkpoint_file(path)
        elif path.suffix == ".ct" and path.with_suffix(".json").is_file():
            head_text = path.with_suffix(".json").read_text(encoding="utf-8")
        else:
            continue
        env = parse_envelope(head_text)
        held.append(load_ciphertexts(data, ctx, env.n_chunks, source=path.name))
        counts["ciphertexts"] += env.n_chunks
        if env.kind == "update":
            groups[(env.task, env.round, env.model)].append((env, data))
    for updates in groups.values():
        if len(updates) >= 3:
            held.append(aggregate_updates(updates, ctx, min_contributors=3, max_contributors=len(updates)))
            counts["sums"] += 1
    return held, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, required=True, help="the server's params-only context")
    parser.add_argument("--server-dir", type=Path, required=True, help="everything the server holds")
    parser.add_argument("--words", required=True, help="comma-separated hex uint64 words of the key signature")
    parser.add_argument("--secret", type=Path, help="positive control: also load this site secret context")
    args = parser.parse_args(argv)
    words = [int(w, 16) for w in args.words.split(",")]
    held, counts = load_server_holdings(args.params, args.server_dir)
    report: dict[str, Any] = {"key_modules_server_side": key_modules_loaded(), "loaded": counts}
    if args.secret is not None:
        from flame_private.secure.site.keys import load_secret_context

        held.append(load_secret_context(args.secret))
    report["key_modules_at_scan"] = key_modules_loaded()
    report["memory"] = scan_own_memory(words)
    report["held_objects"] = len(held)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
