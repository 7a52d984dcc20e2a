"""EgoVLP: the model, its checkpoint loader and the EgoVLP / EgoVLP+ similarity metrics."""

from lego.metrics.egovlp.build import build_egovlp, config_from_state_dict
from lego.metrics.egovlp.checkpoint import CheckpointError, load_egovlp_weights, read_checkpoint
from lego.metrics.egovlp.model import EgoVLP, EgoVLPConfig, SpaceTimeTransformer
from lego.metrics.egovlp.similarity import EgoVLPSimilarity

__all__ = [
    "CheckpointError",
    "EgoVLP",
    "EgoVLPConfig",
    "EgoVLPSimilarity",
    "SpaceTimeTransformer",
    "build_egovlp",
    "config_from_state_dict",
    "load_egovlp_weights",
    "read_checkpoint",
]
