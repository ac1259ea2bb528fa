"""Response model: P(responder to chemoradiation) given baseline MRI and the modality."""

from __future__ import annotations

import torch
from torch import nn

from flame_private.models.blocks import encoder, model_inputs

COND_DIM = 3 + 6
"""Treatment one-hot (photon, proton, carbon) + 6 clinical covariates (data.datasets.encode_covariates)."""


class ResponseNet(nn.Module):
    """3-D encoder with FiLM conditioning at every stage, then a small head.

    The condition also enters the head directly, so covariates' effects do not
    have to pass through the image features.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), groups: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.stages = encoder(channels, groups, COND_DIM)
        self.head = nn.Sequential(
            nn.Linear(channels[-1] + COND_DIM, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 1)
        )

    def forward(self, image: torch.Tensor, seg: torch.Tensor, treatment: torch.Tensor,
                covariates: torch.Tensor) -> torch.Tensor:
        """Logit of P(responder), shape [B]."""
        cond = torch.cat([treatment, covariates], dim=1)
        h = model_inputs(image, seg)
        for stage in self.stages:
            h = stage(h, cond)
        pooled = h.mean(dim=(2, 3, 4))
        return self.head(torch.cat([pooled, cond], dim=1)).squeeze(1)
