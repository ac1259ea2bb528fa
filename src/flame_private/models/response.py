"""Response model: P(responder to chemoradiation) given baseline MRI and the modality."""

from __future__ import annotations

import torch
from torch import nn

from flame_private.models.blocks import N_FIRST_ORDER, encoder, first_order_intensities, model_inputs, tumour_volumes

COND_DIM = 3 + 6
"""Treatment one-hot (photon, proton, carbon) + 6 clinical covariates (data.datasets.encode_covariates)."""
N_CLINICAL = 4 + 6 + 3 + 3
"""Tumour volumes (4), covariates (6), treatment (3), treatment x MGMT (3): ``baselines.FEATURES``, in order."""
N_WIDE = N_CLINICAL + N_FIRST_ORDER
"""What the linear part sees: the clinical features and the tumour's first-order intensities."""


def clinical_features(seg: torch.Tensor, treatment: torch.Tensor, covariates: torch.Tensor) -> torch.Tensor:
    """What a clinician knows before treatment, as the logistic-regression baseline sees it: [B, 16]."""
    mgmt = covariates[:, 2:3]
    return torch.cat([tumour_volumes(seg), covariates, treatment, treatment * mgmt], dim=1)


def wide_features(image: torch.Tensor, seg: torch.Tensor, treatment: torch.Tensor,
                  covariates: torch.Tensor) -> torch.Tensor:
    """[B, 26]: the clinical features, then the first-order intensities a radiologist reads."""
    return torch.cat([clinical_features(seg, treatment, covariates), first_order_intensities(image, seg)], dim=1)


class ResponseNet(nn.Module):
    """Wide and deep: a linear model of the clinical features plus a 3-D encoder of the images.

    The linear ("wide") part sees what the logistic-regression baseline sees
    (tumour volumes, covariates, treatment, treatment x MGMT) and the tumour's
    mean intensity in each sequence, so the network starts from the clinicians'
    and radiologists' knowledge instead of having to rediscover tumour volume and
    contrast uptake from voxels; the encoder ("deep"), FiLM-conditioned on treatment and
    covariates at every stage, adds what only the images show.  Its head's output
    layer starts at zero: an untrained model is the linear model alone, and the
    image path only acts once training finds something in the images.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), groups: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.stages = encoder(channels, groups, COND_DIM)
        hidden, last = nn.Linear(channels[-1] + COND_DIM + 4, 64), nn.Linear(64, 1)
        self.head = nn.Sequential(hidden, nn.ReLU(), nn.Dropout(dropout), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.clinical = nn.Linear(N_WIDE, 1)

    def _image_path_is_constant(self) -> bool:
        """True when the image path adds only its output bias and no gradient is asked of any of it.

        That is the linear part trained alone ("wide": everything else frozen, the output layer at its zero
        start) or inference with that output layer: the same logits without the 3-D encoder, which is nearly all
        of the compute.  Under Opacus's expanded weights a trainable parameter is a wrapper that answers no
        questions: then the path runs.
        """
        params = [*self.stages.parameters(), *self.head.parameters()]
        if any(type(p) not in (torch.Tensor, nn.Parameter) for p in params):
            return False
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return False
        out_layer = self.head[-1]
        assert isinstance(out_layer, nn.Linear)
        return not bool(out_layer.weight.any())

    def forward(self, image: torch.Tensor, seg: torch.Tensor, treatment: torch.Tensor,
                covariates: torch.Tensor) -> torch.Tensor:
        """Logit of P(responder), shape [B]."""
        wide = self.clinical(wide_features(image, seg, treatment, covariates))
        if self._image_path_is_constant():
            return (wide + self.head[-1].bias).squeeze(1)
        cond = torch.cat([treatment, covariates], dim=1)
        h = model_inputs(image, seg)
        for stage in self.stages:
            h = stage(h, cond)
        pooled = h.mean(dim=(2, 3, 4))
        deep = self.head(torch.cat([pooled, cond, tumour_volumes(seg)], dim=1))
        return (wide + deep).squeeze(1)
