"""Flatten model weights into CKKS slot vectors and back.

Order (fixed and documented, identical at every site): the state dict's keys
**sorted lexicographically**; each tensor flattened in row-major (C) order.
Sorting makes the order independent of how the dict was built (a model's
``state_dict()``, a checkpoint, a copy), and every site builds the same model,
so the same names map to the same slots.  Only floating-point tensors travel:
an integer buffer (e.g. BatchNorm's ``num_batches_tracked``) is refused with its
name; drop such keys explicitly with ``exclude=`` (they then stay local).

An update vector is ``[n_k * w_k (all parameters) | n_k]``: the weighted weights
then the count, so the sum over sites holds ``sum n_k w_k`` and ``sum n_k`` and
the FedAvg mean is one division.  A chunk of ``V = poly_modulus_degree`` reals
fills ``V / 2`` complex slots as ``slot[j] = x[j] + 1j * x[V/2 + j]``; the last
chunk is zero-padded.  Pure functions, no keys: server-safe.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from flame_private.secure.errors import PackingError


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one packed tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ParamLayout:
    """Which tensors, in which order, make up the flat vector."""

    specs: tuple[TensorSpec, ...]

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], exclude: Iterable[str] = ()) -> ParamLayout:
        """Layout of ``state_dict`` in sorted-key order; non-float tensors must be excluded explicitly."""
        skip = set(exclude)
        unknown = skip - set(state_dict)
        if unknown:
            raise PackingError(f"exclude names keys not in the state dict: {sorted(unknown)}")
        bad = sorted(k for k, v in state_dict.items() if k not in skip and not torch.is_floating_point(v))
        if bad:
            raise PackingError(f"non-floating-point tensors cannot be averaged: {bad} "
                               "(pass them in exclude= to keep them local)")
        specs = tuple(TensorSpec(k, tuple(state_dict[k].shape), str(state_dict[k].dtype).removeprefix("torch."))
                      for k in sorted(state_dict) if k not in skip)
        if not specs:
            raise PackingError("nothing to pack: the state dict has no floating-point tensors")
        return cls(specs)

    @property
    def n_params(self) -> int:
        return sum(s.numel for s in self.specs)

    @property
    def sha256(self) -> str:
        """Digest of names, shapes and dtypes: sites with another architecture are refused."""
        doc = [[s.name, list(s.shape), s.dtype] for s in self.specs]
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


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
    """``[count * w | count]``: what a site encrypts for FedAvg."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise PackingError(f"count must be a positive integer (patients that trained), got {count!r}")
    flat = flatten(state_dict, layout)
    if not np.all(np.isfinite(flat)):
        raise PackingError("weights contain NaN or infinity; refusing to send them")
    return np.concatenate([flat * float(count), [float(count)]])


def weighted_mean(aggregate: np.ndarray, layout: ParamLayout) -> tuple[dict[str, torch.Tensor], int]:
    """FedAvg model and total count from the decrypted sum ``[sum n_k w_k | sum n_k]``.

    The count is an integer, so CKKS's tiny error on it is rounded away; a count
    far from an integer means the aggregate is not a sum of honest updates.
    """
    if aggregate.shape[0] < layout.n_params + 1:
        raise PackingError(f"aggregate has {aggregate.shape[0]} values, need {layout.n_params + 1}")
    raw_count = float(aggregate[layout.n_params])
    total = round(raw_count)
    if total < 1 or abs(raw_count - total) > 1e-3:
        raise PackingError(f"aggregate count slot holds {raw_count!r}, not a positive integer")
    return unflatten(aggregate[: layout.n_params] / total, layout), total


def to_slots(vector: np.ndarray, values_per_chunk: int) -> list[np.ndarray]:
    """Real vector -> complex slot arrays of ``values_per_chunk / 2`` slots, zero-padded."""
    half = values_per_chunk // 2
    n_chunks = max(1, math.ceil(vector.shape[0] / values_per_chunk))
    padded = np.zeros(n_chunks * values_per_chunk, dtype=np.float64)
    padded[: vector.shape[0]] = vector
    blocks = padded.reshape(n_chunks, 2, half)
    return list(blocks[:, 0, :] + 1j * blocks[:, 1, :])


def from_slots(chunks: Sequence[np.ndarray], n_values: int) -> np.ndarray:
    """Inverse of ``to_slots``: the first ``n_values`` reals."""
    flat = np.concatenate([np.concatenate([c.real, c.imag]) for c in chunks]) if chunks else np.zeros(0)
    if flat.shape[0] < n_values:
        raise PackingError(f"{len(chunks)} chunks hold {flat.shape[0]} values, need {n_values}")
    return flat[:n_values]
