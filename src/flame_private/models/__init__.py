"""3-D networks whose every layer Opacus can clip per sample: the two treatment-conditioned models and the
baseline segmentation model."""

from flame_private.models.evolution import EvolutionNet
from flame_private.models.factory import build_model, count_parameters
from flame_private.models.response import ResponseNet
from flame_private.models.segmentation import SegmentationNet

__all__ = ["EvolutionNet", "ResponseNet", "SegmentationNet", "build_model", "count_parameters"]
