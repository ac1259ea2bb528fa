"""Evolution model: the follow-up segmentation given baseline MRI, modality and interval."""

from __future__ import annotations

import torch
from torch import nn

from flame_private.models.blocks import IN_CHANNELS, DecoderStage, EncoderStage, model_inputs

COND_DIM = 3 + 1
"""Treatment one-hot + follow-up interval in years."""
N_CLASSES = 4
"""Canonical labels: background, necrotic core, oedema, enhancing."""


class EvolutionNet(nn.Module):
    """U-Net-shaped encoder-decoder, FiLM-conditioned at every stage.

    Outputs logits over the canonical labels at the input resolution.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), groups: int = 8) -> None:
        super().__init__()
        enc, prev = [], IN_CHANNELS
        for i, ch in enumerate(channels):
            enc.append(EncoderStage(prev, ch, 1 if i == 0 else 2, groups, COND_DIM))
            prev = ch
        self.encoder = nn.ModuleList(enc)
        dec = []
        for skip_ch in reversed(channels[:-1]):
            dec.append(DecoderStage(prev, skip_ch, skip_ch, groups, COND_DIM))
            prev = skip_ch
        self.decoder = nn.ModuleList(dec)
        self.out = nn.Conv3d(prev, N_CLASSES, kernel_size=1)

    def forward(self, image: torch.Tensor, seg: torch.Tensor, treatment: torch.Tensor,
                interval: torch.Tensor) -> torch.Tensor:
        """Logits [B, 4, D, H, W]."""
        cond = torch.cat([treatment, interval], dim=1)
        h = model_inputs(image, seg)
        skips = []
        for stage in self.encoder:
            h = stage(h, cond)
            skips.append(h)
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            h = stage(h, skip, cond)
        return self.out(h)
