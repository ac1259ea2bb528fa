"""Build any of the three models from a ModelConfig, enforcing the parameter budget.

Every parameter costs ~8 bytes per site per round once encrypted (docs/design.md 4),
so the budget is part of the config, not an afterthought.
"""

from __future__ import annotations

from torch import nn

from flame_private.config import ModelConfig, Task
from flame_private.models.evolution import EvolutionNet
from flame_private.models.response import ResponseNet
from flame_private.models.segmentation import SegmentationNet


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(task: Task, config: ModelConfig) -> nn.Module:
    """The network for ``task``; raises ValueError if it exceeds ``config.max_parameters``."""
    if task == "response":
        model: nn.Module = ResponseNet(config.response_channels, config.norm_groups, config.dropout)
    elif task == "evolution":
        model = EvolutionNet(config.evolution_channels, config.norm_groups)
    elif task == "segmentation":
        model = SegmentationNet(config.segmentation_channels, config.norm_groups)
    else:
        raise ValueError(f"unknown task {task!r}; expected 'response', 'evolution' or 'segmentation'")
    n = count_parameters(model)
    if n > config.max_parameters:
        raise ValueError(f"{task} model has {n:,} parameters, above max_parameters={config.max_parameters:,} "
                         "(reduce the channel widths in the model config)")
    return model
