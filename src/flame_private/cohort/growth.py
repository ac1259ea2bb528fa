"""Fisher-Kolmogorov-Petrovsky-Piskunov tumour growth: dc/dt = div(D grad c) + rho c (1 - c).

Pure functions of arrays.  Diffusion is explicit finite differences with
face diffusivities that are zero wherever either neighbour is outside tissue,
which is exactly the no-flux condition at the CSF and skull boundary.  The
logistic reaction is integrated exactly over each step (operator splitting), so
the step size is limited only by the diffusion stability bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Diffusion:
    """Precomputed face diffusivities divided by the squared spacing, per axis."""

    faces: tuple[np.ndarray, np.ndarray, np.ndarray]
    dt_max: float
    """Largest stable explicit step in days."""


def diffusivity_map(gm: np.ndarray, wm: np.ndarray, tissue: np.ndarray, d_white: float, d_grey: float) -> np.ndarray:
    """Voxel diffusivity (mm^2/day): tissue-fraction-weighted, zero outside tissue."""
    d = (wm * d_white + gm * d_grey).astype(np.float32)
    d[~tissue] = 0.0
    return d


def prepare_diffusion(d: np.ndarray, spacing: tuple[float, float, float]) -> Diffusion:
    """Face diffusivities by harmonic mean (zero if either side is zero: no flux)."""
    faces = []
    rate = 0.0
    for axis, h in enumerate(spacing):
        a = np.take(d, range(0, d.shape[axis] - 1), axis=axis)
        b = np.take(d, range(1, d.shape[axis]), axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where((a > 0) & (b > 0), 2 * a * b / (a + b), 0.0).astype(np.float32)
        f /= np.float32(h * h)
        faces.append(f)
        rate += 2.0 * float(f.max(initial=0.0))
    dt_max = 0.9 / rate if rate > 0 else np.inf
    fx, fy, fz = faces
    return Diffusion(faces=(fx, fy, fz), dt_max=dt_max)


def diffuse(c: np.ndarray, diff: Diffusion, dt: float) -> np.ndarray:
    """One explicit diffusion step; conserves total mass exactly (flux form)."""
    out = c.copy()
    fx, fy, fz = diff.faces
    dtf = np.float32(dt)
    flux = fx * (c[1:] - c[:-1]) * dtf
    out[:-1] += flux
    out[1:] -= flux
    flux = fy * (c[:, 1:] - c[:, :-1]) * dtf
    out[:, :-1] += flux
    out[:, 1:] -= flux
    flux = fz * (c[:, :, 1:] - c[:, :, :-1]) * dtf
    out[:, :, :-1] += flux
    out[:, :, 1:] -= flux
    return out


def logistic(c: np.ndarray, rho: float | np.ndarray, dt: float) -> np.ndarray:
    """Exact solution of dc/dt = rho c (1 - c) over dt."""
    g = np.exp(np.asarray(rho, dtype=np.float32) * np.float32(dt))
    return (c * g / (1.0 - c + c * g)).astype(np.float32)


def kpp_step(c: np.ndarray, diff: Diffusion, rho: float | np.ndarray, dt: float) -> np.ndarray:
    """Advance the density by dt days (Lie splitting: diffuse, then react)."""
    if dt > diff.dt_max * (1 + 1e-6):
        raise ValueError(f"dt={dt:.3g} d exceeds the stability bound {diff.dt_max:.3g} d")
    return np.clip(logistic(diffuse(c, diff, dt), rho, dt), 0.0, 1.0)


def stable_steps(days: float, diff: Diffusion, max_dt: float) -> tuple[int, float]:
    """Number of equal steps covering ``days`` within both the stability bound and ``max_dt``."""
    if days <= 0:
        return 0, 0.0
    dt_cap = min(diff.dt_max, max_dt)
    n = max(1, int(np.ceil(days / dt_cap - 1e-9)))
    return n, days / n


def seed_density(shape: tuple[int, int, int], centre: np.ndarray, spacing: tuple[float, float, float],
                 radius_mm: float, tissue: np.ndarray, peak: float = 0.8) -> np.ndarray:
    """A small Gaussian lump of tumour cells, restricted to tissue."""
    grids = np.meshgrid(*[(np.arange(n) - centre[i]) * spacing[i] for i, n in enumerate(shape)], indexing="ij")
    r2 = sum(g * g for g in grids)
    c = (peak * np.exp(-r2 / (2 * radius_mm**2))).astype(np.float32)
    c[~tissue] = 0.0
    return c
