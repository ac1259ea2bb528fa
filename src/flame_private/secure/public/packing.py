"""Flatten model weights into CKKS slot vectors and back, scaled so that any sum stays bounded.

Order (fixed and documented, identical at every site): the state dict's keys
**sorted lexicographically**; each tensor flattened in row-major (C) order.
Sorting makes the order independent of how the dict was built (a model's
``state_dict()``, a checkpoint, a copy), and every site builds the same model,
so the same names map to the same slots.  Only floating-point tensors travel:
an integer buffer (e.g. BatchNorm's ``num_batches_tracked``) is refused with its
name; drop such keys explicitly with ``exclude=`` (they then stay local).

Scaling (docs/encryption.md, "Packing"): with the public bounds of the layout,
``W`` on every |weight| and ``C`` on the sum of the counts, a site with count
``n_k`` packs ``x = w * n_k / (W * C)`` and, in a chunk of its own, the constant
``c = n_k / (C * M)`` (``M`` = max_sites).  Every |x| of one site is at most
``n_k / C``, so the sum over sites is at most ``sum n_k / C``: at most 1 while
the counts stay within ``C``, whatever the number of sites; the count chunk sums
to at most 1 for any ``M`` sites.  A site refuses a weight beyond ``W`` (naming
the tensor) and a count beyond ``C``; the decrypting site refuses a sum whose
counts exceed ``C`` (its values could have wrapped).  The FedAvg mean is
``sum x * W * C / sum n_k``.

A chunk of ``V = poly_modulus_degree`` reals fills ``V / 2`` complex slots as
``slot[j] = x[j] + 1j * x[V/2 + j]``; the last weight chunk is zero-padded and
the count chunk follows it.  Pure functions, no keys: server-safe.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flame_private.secure.public.errors import OverflowRisk, PackingError


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one packed tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


COUNT_TOLERANCE = 0.25
"""A decrypted count further than this from an integer is not the sum of honest counts."""


def auto_weight_bound(max_abs: float) -> float:
    """Twice ``max_abs`` rounded up to a power of two (1 for an all-zero model): room for training to move."""
    return 2.0 ** math.ceil(math.log2(2.0 * max_abs)) if max_abs > 0 else 1.0


@dataclass(frozen=True)
class ParamLayout:
    """Which tensors, in which order, make up the flat vector, and the public bounds of the packing.

    ``value_bound`` (W) bounds every |weight|, ``count_bound`` (C) the sum of the
    counts of one aggregate, ``max_sites`` (M) the number of sites summed.  All
    four go into ``sha256``, which travels in every header: sites packing with
    other bounds are refused like sites with another architecture.
    """

    specs: tuple[TensorSpec, ...]
    value_bound: float = 1.0
    count_bound: int = 1000
    max_sites: int = 16
    local: tuple[TensorSpec, ...] = ()
    """Floating-point entries of the model that stay at every site (``exclude=``): not packed, but their names
    and shapes are in ``sha256``, so that a site with another architecture is still refused."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value_bound) and self.value_bound > 0):
            raise PackingError(f"value_bound must be a positive number, got {self.value_bound!r}")
        if self.count_bound < 1 or self.max_sites < 1:
            raise PackingError(f"count_bound and max_sites must be >= 1, got {self.count_bound}, {self.max_sites}")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], exclude: Iterable[str] = (), *,
                        value_bound: float | None = None, count_bound: int = 1000,
                        max_sites: int = 16) -> ParamLayout:
        """Layout of ``state_dict`` in sorted-key order; non-float tensors must be excluded explicitly.

        ``value_bound`` None: ``auto_weight_bound`` of this state dict's largest
        |weight| (give the round-1 model, which every site builds identically).
        """
        skip = set(exclude)
        unknown = skip - set(state_dict)
        if unknown:
            raise PackingError(f"exclude names keys not in the state dict: {sorted(unknown)}")
        bad = sorted(k for k, v in state_dict.items() if k not in skip and not torch.is_floating_point(v))
        if bad:
            raise PackingError(f"non-floating-point tensors cannot be averaged: {bad} "
                               "(pass them in exclude= to keep them local)")
        def spec(k: str) -> TensorSpec:
            return TensorSpec(k, tuple(state_dict[k].shape), str(state_dict[k].dtype).removeprefix("torch."))

        specs = tuple(spec(k) for k in sorted(state_dict) if k not in skip)
        local = tuple(spec(k) for k in sorted(skip) if torch.is_floating_point(state_dict[k]))
        if not specs:
            raise PackingError("nothing to pack: the state dict has no floating-point tensors")
        if value_bound is None:
            value_bound = auto_weight_bound(max(float(state_dict[s.name].detach().abs().max()) if s.numel else 0.0
                                                for s in specs))
        return cls(specs, float(value_bound), int(count_bound), int(max_sites), local)

    @property
    def n_params(self) -> int:
        return sum(s.numel for s in self.specs)

    @property
    def sha256(self) -> str:
        """Digest of names, shapes, dtypes and bounds: sites with another architecture or packing are refused."""
        doc: dict[str, list[Any]] = {"tensors": [[s.name, list(s.shape), s.dtype] for s in self.specs],
                                     "bounds": [repr(float(self.value_bound)), self.count_bound, self.max_sites]}
        if self.local:  # absent otherwise: the digests of layouts that send everything are unchanged
            doc["local"] = [[s.name, list(s.shape), s.dtype] for s in self.local]
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()

    @property
    def count_scale(self) -> float:
        """What one count unit weighs in the count chunk (C * M)."""
        return float(self.count_bound) * float(self.max_sites)


def flatten(state_dict: Mapping[str, torch.Tensor], layout: ParamLayout) -> np.ndarray:
    """The tensors of ``layout`` as one float64 vector, in layout order."""
    parts = []
    for spec in layout.specs:
        if spec.name not in state_dict:
            raise PackingError(f"state dict lacks {spec.name!r}")
        t = state_dict[spec.name]
        if tuple(t.shape) != spec.shape:
            raise PackingError(f"{spec.name}: shape {tuple(t.shape)}, layout says {spec.shape}")
        parts.append(t.detach().to("cpu", torch.float64).reshape(-1).numpy())
    return np.concatenate(parts)


def unflatten(vector: np.ndarray, layout: ParamLayout) -> dict[str, torch.Tensor]:
    """Inverse of ``flatten``: tensors with the layout's shapes and dtypes."""
    if vector.shape != (layout.n_params,):
        raise PackingError(f"vector of shape {vector.shape}, layout has {layout.n_params} parameters")
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for spec in layout.specs:
        piece = vector[offset:offset + spec.numel].reshape(spec.shape)
        out[spec.name] = torch.from_numpy(np.ascontiguousarray(piece)).to(getattr(torch, spec.dtype))
        offset += spec.numel
    return out


def update_vector(state_dict: Mapping[str, torch.Tensor], layout: ParamLayout, count: int) -> np.ndarray:
    """``[w * count / (W * C) | count / (C * M)]``: what a site encrypts for FedAvg (the last value in its own chunk).

    Refuses (OverflowRisk, naming the tensor) a weight beyond the layout's bound
    W and a count beyond C: packing them would let the sum wrap silently.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise PackingError(f"count must be a positive integer (patients that trained), got {count!r}")
    if count > layout.count_bound:
        raise OverflowRisk(f"count {count} exceeds the public bound of {layout.count_bound} on the patients of one "
                           "aggregate (he.max_patients); refusing to encrypt rather than let the sum wrap")
    flat = flatten(state_dict, layout)
    offset = 0
    for spec in layout.specs:
        piece = flat[offset:offset + spec.numel]
        offset += spec.numel
        if not np.all(np.isfinite(piece)):
            raise PackingError(f"{spec.name}: weights contain NaN or infinity; refusing to send them")
        peak = float(np.max(np.abs(piece))) if piece.size else 0.0
        if peak > layout.value_bound:
            raise OverflowRisk(f"{spec.name}: |weight| {peak:.6g} exceeds the public bound {layout.value_bound:g} "
                               "the packing is sized for (he.weight_bound); refusing to encrypt rather than let "
                               "the sum wrap")
    return np.concatenate([flat * (float(count) / (layout.value_bound * layout.count_bound)),
                           [float(count) / layout.count_scale]])


def weighted_mean(aggregate: np.ndarray, layout: ParamLayout) -> tuple[dict[str, torch.Tensor], int]:
    """FedAvg model and total count from the decrypted sum of ``update_vector``s.

    The count is an integer, so CKKS's tiny error on it is rounded away; a count
    far from an integer means the aggregate is not a sum of honest updates, and
    a count beyond the layout's bound C means the values may have wrapped.
    """
    if aggregate.shape[0] < layout.n_params + 1:
        raise PackingError(f"aggregate has {aggregate.shape[0]} values, need {layout.n_params + 1}")
    raw_count = float(aggregate[layout.n_params]) * layout.count_scale
    total = round(raw_count) if math.isfinite(raw_count) else 0
    if total < 1 or abs(raw_count - total) > COUNT_TOLERANCE:
        raise PackingError(f"aggregate count slot holds {raw_count!r}, not a positive integer")
    if total > layout.count_bound:
        raise OverflowRisk(f"the aggregate sums {total} patients, more than the public bound of "
                           f"{layout.count_bound} (he.max_patients) its values were scaled for: they may have "
                           "wrapped; raise he.max_patients for the next run")
    scale = layout.value_bound * layout.count_bound / total
    return unflatten(aggregate[: layout.n_params] * scale, layout), total


def to_slots(vector: np.ndarray, values_per_chunk: int, extra_rows: int = 0) -> np.ndarray:
    """Real vector -> ``(chunks, values_per_chunk / 2)`` complex slots, zero-padded, plus ``extra_rows`` zero rows.

    One array written in place (real and imaginary parts through a float view), so
    a million values cost one allocation; ``extra_rows`` leaves room for a chunk
    the caller fills (the count chunk) without another copy.
    """
    half = values_per_chunk // 2
    n_values = vector.shape[0]
    n_chunks = max(1, math.ceil(n_values / values_per_chunk))
    out = np.zeros((n_chunks + extra_rows, half), dtype=np.complex128)
    parts = out.view(np.float64).reshape(n_chunks + extra_rows, half, 2)  # [..., 0] real, [..., 1] imaginary
    full = n_values // values_per_chunk
    blocks = vector[: full * values_per_chunk].reshape(full, 2, half)
    parts[:full, :, 0] = blocks[:, 0, :]
    parts[:full, :, 1] = blocks[:, 1, :]
    rest = vector[full * values_per_chunk:]
    if rest.size:
        tail = np.zeros(values_per_chunk, dtype=np.float64)
        tail[: rest.size] = rest
        parts[full, :, 0] = tail[:half]
        parts[full, :, 1] = tail[half:]
    return out


def from_slots(chunks: np.ndarray | Sequence[np.ndarray], n_values: int) -> np.ndarray:
    """Inverse of ``to_slots``: the first ``n_values`` reals (each chunk's real parts, then its imaginary parts)."""
    slots = np.asarray(chunks, dtype=np.complex128)
    if slots.size == 0:
        flat = np.zeros(0)
    else:
        flat = np.stack([slots.real, slots.imag], axis=1).reshape(-1)
    if flat.shape[0] < n_values:
        raise PackingError(f"{len(slots)} chunks hold {flat.shape[0]} values, need {n_values}")
    return flat[:n_values]
