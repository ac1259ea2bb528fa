"""a. Plaintext scan: search what the server holds for the sites' weights and metric sums.

Every received payload and every server file, read as float32 and float64 at
every byte alignment, is searched for the sites' weights, weighted weights,
metric sums and the global sums, by exact value matches and by normalised
cross-correlation with the largest tensors.  Control: the same scan over what
plaintext FedAvg would have carried (Flower ``ArrayRecord`` of the same
weights, ``MetricRecord`` of the same sums).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from scipy.stats import binom

from flame_private.attacks.curious_server.recorded_federation import (
    Plain,
    global_sum_groups,
    wire_bytes,
)
from flame_private.attacks.curious_server.settings import (
    CORRELATION_FOUND,
    EXACT_FOUND,
    MAX_ABS_FLOAT,
    MIN_EXACT_VALUES,
)
from flame_private.federation.site.site import METRIC_SCALE


@dataclass
class Target:
    """Something the server must not learn, as values to look for."""

    source: str
    """Whose secret it is, e.g. 'site-a response round 1 update'; exposed if any of its targets is found."""
    what: str
    values: np.ndarray
    templates: list[np.ndarray] = field(default_factory=list)


def _patterns(values: np.ndarray, dtype: type[np.floating], utype: type[np.unsignedinteger]) -> np.ndarray:
    """Distinct bit patterns of the values in ``dtype``, leaving out 0 and round numbers any file may hold."""
    v = np.asarray(values, dtype=np.float64).astype(dtype)
    keep = np.isfinite(v) & (np.abs(v) > 1e-12)
    keep &= (v * 1024) != np.round(v * 1024)
    return np.unique(v[keep].view(utype))


def _window_spread(cs: np.ndarray, cs2: np.ndarray, m: int) -> np.ndarray:
    """sqrt of m x variance of every length-m window (0 where the window is flat)."""
    s = cs[m:] - cs[:-m]
    var = ((cs2[m:] - cs2[:-m]) - s * s / m).astype(np.float64)
    return np.where(var > 1e-12 * m, np.sqrt(np.maximum(var, 0.0)), 0.0)


def _max_ncc(x: np.ndarray, spectrum: np.ndarray, spread: np.ndarray, template: np.ndarray,
             template_spectrum: np.ndarray) -> float:
    """Largest |Pearson r| between a (centred) template and any window of ``x``.

    All windows at once by FFT, with window variances from extended-precision
    running sums; the few best windows are then recomputed exactly, so an
    FFT rounding artefact can never report a match that is not there.
    """
    n, m = x.size, template.size
    if n < m:
        return 0.0
    tn = float(np.linalg.norm(template))
    size = 2 * (spectrum.size - 1)
    num = np.fft.irfft(spectrum * template_spectrum, size)[: n - m + 1]
    ok = spread > 0
    ncc = np.zeros(n - m + 1)
    ncc[ok] = np.abs(num[ok]) / (spread[ok] * tn)
    best = 0.0
    for k in np.argpartition(ncc, -5)[-5:] if ncc.size > 5 else range(ncc.size):
        if ncc[k] > 0:
            window = x[k:k + m] - x[k:k + m].mean()
            norm = float(np.linalg.norm(window))
            if norm > 0:
                best = max(best, abs(float(window @ template)) / (norm * tn))
    return best


class PlaintextScanner:
    """Looks for the targets in byte strings read as float32 and float64 at every alignment."""

    KINDS: tuple[tuple[type[np.floating], type[np.unsignedinteger]], ...] = ((np.float32, np.uint32),
                                                                              (np.float64, np.uint64))

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = list(targets)
        self.patterns: dict[int, np.ndarray] = {}
        """Per width, every target's distinct bit patterns, sorted and merged."""
        self.owned: dict[int, list[np.ndarray]] = {}
        """Per width and target, where its patterns sit in ``patterns``."""
        self.found: dict[int, np.ndarray] = {}
        for dtype, utype in self.KINDS:
            width = np.dtype(dtype).itemsize
            per_target = [_patterns(t.values, dtype, utype) for t in self.targets]
            merged = np.unique(np.concatenate(per_target)) if per_target else np.zeros(0, utype)
            self.patterns[width] = merged
            self.owned[width] = [np.searchsorted(merged, p) for p in per_target]
            self.found[width] = np.zeros(merged.size, dtype=bool)
        self.templates = [(i, t - t.mean()) for i, target in enumerate(self.targets) for t in target.templates]
        self._spectra: dict[tuple[int, int], np.ndarray] = {}
        self.correlation = np.zeros(len(self.targets))
        self.bytes_scanned = 0
        self.items = 0
        self._longest = max((t.size for _, t in self.templates), default=1)

    def _template_spectrum(self, j: int, size: int) -> np.ndarray:
        if (j, size) not in self._spectra:
            self._spectra[(j, size)] = np.conj(np.fft.rfft(self.templates[j][1], size))
        return self._spectra[(j, size)]

    def scan(self, data: bytes) -> None:
        self.items += 1
        self.bytes_scanned += len(data)
        for dtype, utype in self.KINDS:
            width = np.dtype(dtype).itemsize
            merged = self.patterns[width]
            for offset in range(width):
                count = (len(data) - offset) // width
                if count <= 0:
                    continue
                words = np.frombuffer(data, dtype=np.dtype(utype).newbyteorder("<"), count=count, offset=offset)
                if merged.size:
                    pos = np.minimum(np.searchsorted(merged, words), merged.size - 1)
                    hit = merged[pos] == words
                    self.found[width][pos[hit]] = True
                if not self.templates:
                    continue
                with np.errstate(invalid="ignore", over="ignore"):
                    x = words.view(np.dtype(dtype).newbyteorder("<")).astype(np.float64)
                    x[~np.isfinite(x) | (np.abs(x) > MAX_ABS_FLOAT)] = 0.0
                if x.size < 16 or not np.any(x):
                    continue
                size = 1 << int(np.ceil(np.log2(x.size + self._longest)))
                spectrum = np.fft.rfft(x, size)
                xl = x.astype(np.longdouble)
                cs = np.concatenate([np.zeros(1, np.longdouble), np.cumsum(xl)])
                cs2 = np.concatenate([np.zeros(1, np.longdouble), np.cumsum(xl * xl)])
                spreads: dict[int, np.ndarray] = {}
                for j, (i, template) in enumerate(self.templates):
                    if template.size > x.size:
                        continue
                    if template.size not in spreads:
                        spreads[template.size] = _window_spread(cs, cs2, template.size)
                    r = _max_ncc(x, spectrum, spreads[template.size], template, self._template_spectrum(j, size))
                    self.correlation[i] = max(self.correlation[i], r)

    def report(self) -> list[dict[str, Any]]:
        """Per target: best correlation, fraction of its values found bit for bit, and whether it was found.

        ``exact_chance_p`` is how likely that many bit-for-bit hits are by coincidence: a given 4-byte pattern
        turns up in ``B`` random bytes with probability ``1 - exp(-B / 2^32)`` (a few percent for the server's
        tens of MB), so one hit among a metric vector's 11 values is expected now and then; the binomial tail
        of the hits says whether they are more than that.
        """
        out = []
        for i, t in enumerate(self.targets):
            exact, chance_p = 0.0, 1.0
            for width, owned in self.owned.items():
                if owned[i].size >= MIN_EXACT_VALUES:
                    hits = int(self.found[width][owned[i]].sum())
                    exact = max(exact, hits / owned[i].size)
                    per_pattern = -np.expm1(-self.bytes_scanned / float(2 ** (8 * width)))
                    chance_p = min(chance_p, float(binom.sf(hits - 1, owned[i].size, per_pattern)) if hits else 1.0)
            corr = float(self.correlation[i])
            out.append({"source": t.source, "what": t.what, "exact_fraction": exact, "exact_chance_p": chance_p,
                        "correlation": corr, "found": bool(exact >= EXACT_FOUND or corr >= CORRELATION_FOUND)})
        return out


def _largest(state: dict[str, np.ndarray], k: int) -> list[np.ndarray]:
    arrays = sorted(state.values(), key=lambda a: a.size, reverse=True)[:k]
    return [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]


def _flat(state: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in state.values()])



def scan_targets(plains: Sequence[Plain], k: int) -> list[Target]:
    """Each site's update and metric sums, and each round's global model and metric totals."""
    targets = []
    for p in plains:
        name = f"{p.site_id} {p.task} round {p.round}"
        if p.is_metrics:
            sums = _flat(p.state)
            targets += [Target(f"{name} metric sums", "released sums", sums * METRIC_SCALE),
                        Target(f"{name} metric sums", "encoded sums", sums)]
        else:
            w = _flat(p.state)
            targets += [Target(f"{name} update", "weights", w, _largest(p.state, k)),
                        Target(f"{name} update", "count x weights", p.vector[:-1])]
    for (task, round_, _model), group in sorted(global_sum_groups(plains).items()):
        total = np.sum([p.vector for p in group], axis=0)
        if group[0].is_metrics:
            targets.append(Target(f"{task} round {round_} metric totals", "summed sums",
                                  total[:-1] * METRIC_SCALE))
            continue
        mean = total[:-1] / total[-1]
        offsets = np.cumsum([0] + [a.size for a in group[0].state.values()])
        mean_state = {n: mean[offsets[i]:offsets[i + 1]] for i, n in enumerate(group[0].state)}
        targets += [Target(f"{task} round {round_} global model", "weights", mean, _largest(mean_state, k)),
                    Target(f"{task} round {round_} global model", "summed count x weights", total[:-1])]
    return targets


def plaintext_fedavg_items(plains: Sequence[Plain]) -> list[tuple[str, bytes]]:
    """What plaintext FedAvg would have carried and kept: the positive control's bytes."""
    items = []
    for p in plains:
        if p.is_metrics:
            content = RecordDict({"metrics": MetricRecord({"sums": [float(v) for v in _flat(p.state) * METRIC_SCALE]})})
            step = "evaluate"
        else:
            content = RecordDict({"arrays": ArrayRecord({n: torch.from_numpy(a) for n, a in p.state.items()}),
                                  "metrics": MetricRecord({"num-examples": p.count})})
            step = "train"
        items.append((f"{p.site_id} {p.task} round {p.round} {step} reply",
                      wire_bytes(Message(content, dst_node_id=0, message_type=step))))
    for (task, round_, model), group in sorted(global_sum_groups(plains).items()):
        total = np.sum([p.vector for p in group], axis=0)
        if group[0].is_metrics:
            record: ArrayRecord | MetricRecord = MetricRecord({"sums": [float(v) for v in total[:-1] * METRIC_SCALE]})
        else:
            mean = total[:-1] / total[-1]
            offsets = np.cumsum([0] + [a.size for a in group[0].state.values()])
            record = ArrayRecord({n: torch.from_numpy(mean[offsets[i]:offsets[i + 1]].astype(a.dtype).reshape(a.shape))
                                  for i, (n, a) in enumerate(group[0].state.items())})
        items.append((f"{task} round {round_} {model} server checkpoint",
                      wire_bytes(Message(RecordDict({"checkpoint": record}), dst_node_id=0, message_type="query"))))
    return items


def run_scan(targets: Sequence[Target], items: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    scanner = PlaintextScanner(targets)
    for _, data in items:
        scanner.scan(data)
    rows = scanner.report()
    sources = sorted({r["source"] for r in rows})
    exposed = sorted({r["source"] for r in rows if r["found"]})
    return {"rows": rows, "sources": sources, "exposed": exposed, "items": scanner.items,
            "bytes": scanner.bytes_scanned, "max_correlation": max((r["correlation"] for r in rows), default=0.0),
            "max_exact_fraction": max((r["exact_fraction"] for r in rows), default=0.0),
            "min_exact_chance_p": min((r["exact_chance_p"] for r in rows), default=1.0)}
