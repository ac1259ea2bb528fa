"""The one MONAI preprocessing chain that turns any case record into model tensors.

Every layout ends here with the same steps : load, channel-first, reorient to RAS, resample to the model's voxel
size, map segmentation labels to the canonical set, crop/pad around the brain to
the model grid, and z-score each MRI sequence inside the brain.  Only the label
map differs between layouts (and, for LUMIERE, between patients), so the chain is
built per label map and cached.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    CastToTyped,
    Compose,
    ConcatItemsd,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    NormalizeIntensityd,
    Orientationd,
    ResizeWithPadOrCropd,
    Spacingd,
)

from flame_private.config import MRI_SEQUENCES, DataConfig
from flame_private.data.records import CaseRecord, TimepointRecord

IMAGE_KEY = "image"
SEG_KEY = "seg"


def _brain(x: torch.Tensor) -> torch.Tensor:
    """Brain mask for cropping: skull-stripped T1 is zero outside the brain."""
    return x > 0


@functools.lru_cache(maxsize=64)
def _build(data_config: DataConfig, label_pairs: tuple[tuple[int, int], ...], seg_keys: tuple[str, ...]) -> Compose:
    images = list(MRI_SEQUENCES)
    segs = list(seg_keys)
    keys = images + segs
    spacing = (data_config.voxel_mm,) * 3
    grid = (data_config.grid,) * 3
    steps = [
        LoadImaged(keys, reader="NibabelReader", image_only=True),
        EnsureChannelFirstd(keys),
        # nibabel world coordinates are RAS+: say so rather than rely on a changing default.
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=spacing, mode=["bilinear"] * len(images) + ["nearest"] * len(segs)),
    ]
    if segs:
        steps.append(
            MapLabelValued(
                segs,
                orig_labels=[s for s, _ in label_pairs],
                target_labels=[t for _, t in label_pairs],
                dtype=np.float32,
            )
        )
    steps += [
        CropForegroundd(
            keys,
            source_key="t1",
            select_fn=_brain,
            margin=0,
            allow_smaller=True,
            start_coord_key=None,
            end_coord_key=None,
        ),
        ResizeWithPadOrCropd(keys, spatial_size=grid),
        NormalizeIntensityd(images, nonzero=True, channel_wise=True),
        ConcatItemsd(images, name=IMAGE_KEY, dim=0),
        DeleteItemsd(images),
        CastToTyped([IMAGE_KEY, *segs], dtype=[torch.float32] + [torch.int64] * len(segs)),
        EnsureTyped([IMAGE_KEY, *segs], track_meta=False),
    ]
    return Compose(steps)


def build_transforms(
    data_config: DataConfig, label_map: Mapping[int, int], seg_keys: Sequence[str] = (SEG_KEY,)
) -> Compose:
    """The preprocessing chain for one label map.

    Input: a dict of file paths with keys ``t1, t1ce, t2, flair`` and ``seg_keys``.
    Output: ``image`` float32 [4, G, G, G] (``MRI_SEQUENCES`` order) and each seg key
    as int64 [1, G, G, G] with canonical labels, all on the same grid.
    """
    pairs = tuple(sorted((int(s), int(t)) for s, t in label_map.items() if int(s) != int(t)))
    return _build(data_config, pairs, tuple(seg_keys))


def timepoint_inputs(
    baseline: TimepointRecord, targets: Sequence[TimepointRecord] = ()
) -> tuple[dict[str, Path], tuple[str, ...]]:
    """File dict for the chain: baseline images and seg, plus follow-up segs as ``target_<i>``."""
    inputs: dict[str, Path] = dict(baseline.files.images())
    seg_keys: list[str] = []
    if baseline.files.seg is not None:
        inputs[SEG_KEY] = baseline.files.seg
        seg_keys.append(SEG_KEY)
    for i, tp in enumerate(targets):
        if tp.files.seg is None:
            raise ValueError(f"timepoint {tp.name} has no segmentation to use as a target")
        key = f"target_{i}"
        inputs[key] = tp.files.seg
        seg_keys.append(key)
    return inputs, tuple(seg_keys)


AFFINE_KEY = "affine"


def preprocess(
    record: CaseRecord, data_config: DataConfig, targets: Sequence[TimepointRecord] = (), with_affine: bool = False
) -> dict[str, torch.Tensor]:
    """Baseline ``image`` and ``seg`` (if any) of a case, plus ``target_<i>`` for each follow-up given.

    Follow-up segmentations go through the same call so they are cropped with the
    baseline's brain box and stay voxel-aligned with it. WITH_AFFINE adds
    ``affine`` (model-grid voxel -> RAS mm, float64 [4, 4]), which places a
    prediction back on the patient's scans.
    """
    inputs, seg_keys = timepoint_inputs(record.baseline, targets)
    chain = build_transforms(data_config, record.label_map, seg_keys)
    if not with_affine:
        return chain({k: str(v) for k, v in inputs.items()})
    # The chain's last step drops MONAI's metadata; run it apart and keep the affine first.
    data = chain.transforms[:-1]
    out: dict[str, Any] = {k: str(v) for k, v in inputs.items()}
    for step in data:
        out = step(out)
    affine = torch.as_tensor(np.asarray(out[IMAGE_KEY].affine), dtype=torch.float64)
    out = chain.transforms[-1](out)
    out[AFFINE_KEY] = affine
    return out
