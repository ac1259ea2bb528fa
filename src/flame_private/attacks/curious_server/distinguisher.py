"""d. Distinguisher: can the server tell two sites' ciphertexts apart?

A logistic regression on byte statistics of blocks of two sites' ciphertexts
(the message-carrying polynomial, as the server can parse it) must do no
better than chance (binomial interval containing 0.5).  Control: the same
classifier on the two sites' plaintext packed updates.  The two sites are
those whose patient counts differ most, so their plaintexts differ visibly;
the ciphertext sample is every chunk they sent plus fresh encryptions of the
same updates by the site's own code (as if sent again), so the interval is
tight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal.sealapi as sa

from flame_private.attacks.curious_server.recorded_federation import Received
from flame_private.attacks.curious_server.settings import CuriousServerSettings
from flame_private.attacks.stats import clopper_pearson
from flame_private.secure.public.envelope import load_ciphertexts
from flame_private.secure.public.params import ParamsContext
from flame_private.secure.site.codec import encrypt_packed
from flame_private.secure.site.keys import SecretContext


def _blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data) - size + 1, size)]


def block_features(block: bytes) -> np.ndarray:
    """Byte statistics a server can compute: nibble histograms, per-position mean and spread in 8-byte words."""
    b = np.frombuffer(block, dtype=np.uint8)
    words = b[: b.size // 8 * 8].reshape(-1, 8).astype(np.float64) / 255.0
    return np.concatenate([np.bincount(b >> 4, minlength=16) / b.size, np.bincount(b & 15, minlength=16) / b.size,
                           words.mean(axis=0), words.std(axis=0)])


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 30) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (intercept not penalised)."""
    xb = np.hstack([x, np.ones((x.shape[0], 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def cross_validated_accuracy(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> tuple[int, int]:
    """Correct held-out predictions and their number, stratified k-fold."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=int)
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == label))
        fold[idx] = np.arange(idx.size) % folds
    correct = 0
    for f in range(folds):
        train, test = fold != f, fold == f
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
        sd[sd == 0] = 1.0
        w = _fit_logistic((x[train] - mu) / sd, y[train])
        z = np.hstack([(x[test] - mu) / sd, np.ones((int(test.sum()), 1))]) @ w
        correct += int(np.sum((z > 0).astype(int) == y[test]))
    return correct, int(y.size)


def distinguish(samples: dict[str, list[bytes]], settings: CuriousServerSettings, seed: int) -> dict[str, Any]:
    """Balanced classes, features, cross-validated accuracy and its interval."""
    labels = sorted(samples)
    rng = np.random.default_rng(seed)
    n = min(len(samples[s]) for s in labels)
    chosen = {s: [samples[s][i] for i in sorted(rng.choice(len(samples[s]), n, replace=False))] for s in labels}
    x = np.array([block_features(b) for s in labels for b in chosen[s]])
    y = np.repeat([0, 1], n)
    correct, total = cross_validated_accuracy(x, y, settings.folds, seed)
    low, high = clopper_pearson(correct, total, settings.confidence)
    return {"accuracy": correct / total, "ci_low": low, "ci_high": high, "samples": total,
            "succeeded": bool(low > 0.5)}


def _c0_bytes(ct: sa.Ciphertext) -> bytes:
    """The message-carrying polynomial c0 of a ciphertext, as the server holds it after parsing."""
    data = ct.dyn_array()
    n = ct.poly_modulus_degree() * ct.coeff_modulus_size()
    return np.array([data.at(i) for i in range(n)], dtype="<u8").tobytes()


def distinguisher_check(received: Sequence[Received], params: ParamsContext, secrets: dict[str, SecretContext],
                        settings: CuriousServerSettings, seed: int) -> dict[str, Any]:
    """The two sites whose patient counts differ most: ciphertext blocks, then plaintext blocks."""
    updates = [r for r in received if r.plain is not None and not r.plain.is_metrics]
    counts = {r.site_id: r.plain.count for r in updates if r.plain is not None}
    ordered = sorted(counts, key=lambda s: (counts[s], s))
    pair = (ordered[0], ordered[-1])
    cipher: dict[str, list[bytes]] = {s: [] for s in pair}
    plain: dict[str, list[bytes]] = {s: [] for s in pair}
    for r in updates:
        if r.site_id not in pair or r.plain is None or r.payload is None:
            continue
        payloads = [r.payload] + [encrypt_packed(secrets[r.site_id], r.plain.vector)
                                  for _ in range(settings.reencryptions)]
        for payload in payloads:
            n_chunks = params.update_chunks(r.plain.vector.size - 1)
            for ct in load_ciphertexts(payload, params, n_chunks):
                cipher[r.site_id] += _blocks(_c0_bytes(ct), settings.block_bytes)
        # In the clear: the weighted update [n_k * w_k | n_k] (the packing's public scaling W * C removed: it
        # carries no information, and plaintext FedAvg would not apply it).
        weighted = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in r.plain.state.values()])
        clear = np.append(weighted * r.plain.count, float(r.plain.count))
        plain[r.site_id] += _blocks(clear.astype("<f8").tobytes(), settings.block_bytes)
    return {"sites": list(pair), "patients_counted": [counts[s] for s in pair],
            "ciphertext": distinguish(cipher, settings, seed), "plaintext": distinguish(plain, settings, seed)}

