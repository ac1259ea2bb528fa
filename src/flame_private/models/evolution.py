"""Evolution model: the follow-up segmentation given baseline MRI, modality and interval."""

from __future__ import annotations

import torch
from torch import nn

from flame_private.models.blocks import decoder, encoder, model_inputs

COND_DIM = 3 + 1
"""Treatment one-hot + follow-up interval in years."""
N_CLASSES = 4
"""Canonical labels: background, necrotic core, oedema, enhancing."""
PRIOR_LOGIT = 4.0
"""Initial logit margin of the baseline label over the others."""


class EvolutionNet(nn.Module):
    """U-Net-shaped encoder-decoder, FiLM-conditioned at every stage, with a persistence prior.

    Outputs logits over the canonical labels at the input resolution.  The
    follow-up tumour is mostly the baseline tumour, changed; a direct path from
    the baseline labels to the logits lets the network spend its few (and, under
    DP-SGD, noisy) steps on the change rather than on re-learning the anatomy.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), groups: int = 8) -> None:
        super().__init__()
        self.encoder = encoder(channels, groups, COND_DIM)
        self.decoder = decoder(channels, groups, COND_DIM)
        prev = channels[0]
        # The network predicts the change: its output layer starts at zero, so that an untrained model is
        # exactly the persistence prior below ("no change") and every step of training moves it from there.
        self.out = nn.Conv3d(prev, N_CLASSES, kernel_size=1)
        for p in self.out.parameters():  # weight and bias
            nn.init.zeros_(p)
        # Persistence prior: a 1x1 convolution from the baseline labels to the output logits,
        # initialised so that an untrained model predicts "no change".  Training learns the change.
        self.prior = nn.Conv3d(3, N_CLASSES, kernel_size=1)
        with torch.no_grad():
            self.prior.weight.zero_()
            self.prior.get_parameter("bias").copy_(torch.tensor([PRIOR_LOGIT / 2, 0.0, 0.0, 0.0]))
            for k in range(3):
                self.prior.weight[k + 1, k] = PRIOR_LOGIT

    def forward(self, image: torch.Tensor, seg: torch.Tensor, treatment: torch.Tensor,
                interval: torch.Tensor) -> torch.Tensor:
        """Logits [B, 4, D, H, W]."""
        cond = torch.cat([treatment, interval], dim=1)
        h = model_inputs(image, seg)
        baseline_labels = h[:, 4:]
        skips = []
        for stage in self.encoder:
            h = stage(h, cond)
            skips.append(h)
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            h = stage(h, skip, cond)
        return self.out(h) + self.prior(baseline_labels)
