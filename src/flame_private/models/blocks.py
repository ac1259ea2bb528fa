"""Building blocks: MONAI convolutions with GroupNorm, and FiLM conditioning.

Everything here is a Conv3d, GroupNorm or Linear layer with functional glue,
which Opacus's expanded-weights ("ew") grad-sample mode handles: no BatchNorm,
no in-place residual adds or activations, no transposed convolutions (upsampling
is trilinear interpolation followed by a convolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from flame_private.config import FIELD_OF_VIEW_MM

IN_CHANNELS = 7
"""T1, T1ce, T2, FLAIR + one-hot necrotic core, oedema, enhancing of the baseline segmentation."""


def conv_block(in_ch: int, out_ch: int, stride: int, groups: int) -> Convolution:
    """Conv3d(3x3x3) -> GroupNorm -> ReLU (not in place)."""
    return Convolution(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        strides=stride,
        kernel_size=3,
        norm=("group", {"num_groups": _groups(out_ch, groups)}),
        act=("relu", {"inplace": False}),
    )


def _groups(channels: int, wanted: int) -> int:
    """Largest group count <= wanted that divides the channels."""
    g = min(wanted, channels)
    while channels % g:
        g -= 1
    return g


class FiLM(nn.Module):
    """Feature-wise linear modulation: h * (1 + gamma(c)) + beta(c).

    How the treatment (and covariates, or the follow-up interval) enters a
    convolutional network: one Linear per stage, initialised to the identity so
    an untrained model ignores the condition.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=1)
        shape = (h.shape[0], h.shape[1]) + (1,) * (h.ndim - 2)
        return h * (1.0 + gamma.view(shape)) + beta.view(shape)


class EncoderStage(nn.Module):
    """Two convolutions (the first may downsample) and a FiLM (none when ``cond_dim`` is 0: nothing conditions)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = conv_block(in_ch, out_ch, stride, groups)
        self.conv2 = conv_block(out_ch, out_ch, 1, groups)
        self.film = FiLM(cond_dim, out_ch) if cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return _film(self.film, self.conv2(self.conv1(x)), cond)


def _film(film: FiLM | None, h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    if film is None:
        return h
    if cond is None:
        raise ValueError("this stage is conditioned (FiLM) and needs its condition")
    return film(h, cond)


def encoder(channels: tuple[int, ...], groups: int, cond_dim: int, in_channels: int = IN_CHANNELS) -> nn.ModuleList:
    """Encoder stages from ``in_channels``: full resolution first, then halving at each stage."""
    stages, prev = [], in_channels
    for i, ch in enumerate(channels):
        stages.append(EncoderStage(prev, ch, 1 if i == 0 else 2, groups, cond_dim))
        prev = ch
    return nn.ModuleList(stages)


class DecoderStage(nn.Module):
    """Upsample (trilinear), concatenate the skip, two convolutions, FiLM (none when ``cond_dim`` is 0)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, groups: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = conv_block(in_ch + skip_ch, out_ch, 1, groups)
        self.conv2 = conv_block(out_ch, out_ch, 1, groups)
        self.film = FiLM(cond_dim, out_ch) if cond_dim else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return _film(self.film, self.conv2(self.conv1(torch.cat([x, skip], dim=1))), cond)


def decoder(channels: tuple[int, ...], groups: int, cond_dim: int) -> nn.ModuleList:
    """Decoder stages back up the ``encoder(channels, ...)``, each joining the encoder stage of its resolution."""
    stages, prev = [], channels[-1]
    for skip_ch in reversed(channels[:-1]):
        stages.append(DecoderStage(prev, skip_ch, skip_ch, groups, cond_dim))
        prev = skip_ch
    return nn.ModuleList(stages)


def model_inputs(image: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """4 MRI channels + one-hot of the three tumour labels of the baseline segmentation."""
    seg = seg.long().squeeze(1)
    onehot = torch.stack([(seg == k) for k in (1, 2, 3)], dim=1).to(image.dtype)
    return torch.cat([image, onehot], dim=1)



FIELD_OF_VIEW_ML = FIELD_OF_VIEW_MM**3 / 1000.0
"""Volume of the default model field of view (192 mm)^3, in mL."""


def tumour_volumes(seg: torch.Tensor) -> torch.Tensor:
    """[B, 4] log(1 + mL) of necrotic core, oedema, enhancing and whole tumour.

    The volume is the fraction of the field of view times the default field of
    view's volume, so the feature means the same volume whatever the grid the
    data pipeline resamples to, and equals the logistic baseline's log(1 + mL)
    at the default field of view.  The scale matters: on log(1 + per mille of the
    field of view) the same linear model ranks patients worse (validation AUC
    0.709 against 0.728 on the study cohort).
    """
    s = seg.long().squeeze(1)
    dims = tuple(range(1, s.ndim))
    counts = torch.stack([(s == 1).sum(dims), (s == 2).sum(dims), (s == 3).sum(dims), (s > 0).sum(dims)], dim=1)
    return torch.log1p(FIELD_OF_VIEW_ML * counts.to(torch.float32) / float(s[0].numel()))


FIRST_ORDER_LABELS = (2, 3)
"""Compartments whose mean intensities ``first_order_intensities`` reads: oedema and enhancing tumour."""
N_FIRST_ORDER = 4 * len(FIRST_ORDER_LABELS) + len(FIRST_ORDER_LABELS)


def first_order_intensities(image: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """[B, 10] radiomics' first-order features: each sequence's mean in oedema and in enhancing tumour.

    Each mean is relative to the healthy brain's mean of the same sequence (the
    images are z-scored over the brain, so this cancels a scanner's scale), zero
    where the compartment is absent, followed by one presence flag per
    compartment.  Why: how bright a tumour enhances and how dark its T2 and FLAIR
    are tracks its cellularity and proliferation, which decide its response; a
    3-D encoder trained on a few hundred patients does not find these means by
    itself, a linear model of them does (docs/results.md).
    """
    s = seg.long().squeeze(1)
    brain = (image != 0).any(dim=1)
    dims = tuple(range(2, image.ndim))

    def masked_mean(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask.unsqueeze(1).to(image.dtype)
        n = m.sum(dims)
        return (image * m).sum(dims) / n.clamp_min(1.0), (n[:, 0] > 0).to(image.dtype)

    healthy, _ = masked_mean(brain & (s == 0))
    means, flags = [], []
    for label in FIRST_ORDER_LABELS:
        mean, present = masked_mean(s == label)
        means.append((mean - healthy) * present[:, None])
        flags.append(present)
    return torch.cat([*means, torch.stack(flags, dim=1)], dim=1)
