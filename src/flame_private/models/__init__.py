"""Treatment-conditioned 3-D networks whose every layer Opacus can clip per sample."""

from flame_private.models.evolution import EvolutionNet
from flame_private.models.factory import build_model, count_parameters
from flame_private.models.response import ResponseNet

__all__ = ["EvolutionNet", "ResponseNet", "build_model", "count_parameters"]
