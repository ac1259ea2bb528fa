"""Curious server: what can the aggregation server learn from everything it receives and keeps?

A real (simulated) federation runs on a small synthetic cohort: key ceremony,
site configs and approved policies, the real ServerApp logic (``run_server``)
and the real ClientApp, connected by the in-process Grid.  The server is
honest but curious: it records every reply it receives (the bytes Flower would
carry, object by object) and keeps everything it writes to disk.  An oracle
that only a simulation can have sees what each site encrypted (the plaintext
``[n_k w_k | n_k]`` and the metric sums, captured as the site encrypts them),
so each check can be scored against the truth.

Four checks, each with a positive control where the protection is off:

a. **Plaintext scan**: every received payload and every server file, read as
   float32 and float64 at every byte alignment, is searched for the sites'
   weights, weighted weights, metric sums and the global sums, by exact value
   matches and by normalised cross-correlation with the largest tensors.
   Control: the same scan over what plaintext FedAvg would have carried (Flower
   ``ArrayRecord`` of the same weights, ``MetricRecord`` of the same sums).
b. **Decryption**: each ciphertext must parse under the params-only context;
   decrypting with anything the server holds must fail (there is no key; every
   file it holds is tried as a SEAL secret key); a fresh secret key under the
   same parameters (the best a server could do) must give values uncorrelated
   with the truth.  Control: the site's secret key decrypts to the truth, and
   the same "try every file as a key" finds the key in a site's folder.
c. **Secret key in memory or on disk**: a fresh process importing only the
   server-side modules loads all the server holds and scans its own memory
   for a run of the secret key's coefficients; the server's files are scanned
   for those and for the key's serialised bytes.  Control: the same process,
   also loading the site's secret context, and the same file scan over a
   site's folder, find it.
d. **Distinguisher**: a logistic regression on byte statistics of blocks of two
   sites' ciphertexts (the message-carrying polynomial, as the server can parse
   it) must do no better than chance (binomial interval containing 0.5).
   Control: the same classifier on the two sites' plaintext packed updates.
   The two sites are those whose patient counts differ most, so their
   plaintexts differ visibly; the ciphertext sample is every chunk they sent
   plus fresh encryptions of the same updates by the site's own code (as if
   sent again), so the interval is tight.

What the server *can* see is stated, not tested away: who took part, when, and
message sizes.

Modules: ``settings`` (size presets, thresholds), ``recorded_federation`` (the
federation and what the server recorded), one per check (``plaintext_scan``,
``decryption``, ``key_search`` with its subprocess ``probe``,
``distinguisher``), and ``attack`` (``run_curious_server``, the verdicts).

Nothing is imported here on purpose: ``probe`` runs as the aggregation
server's process (``python -m flame_private.attacks.curious_server.probe``),
which executes this file first, and must load only the server-side modules.
``run_curious_server`` is therefore imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flame_private.attacks.curious_server.attack import run_curious_server

__all__ = ["run_curious_server"]


def __getattr__(name: str) -> Any:
    if name == "run_curious_server":
        from flame_private.attacks.curious_server.attack import run_curious_server

        return run_curious_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
