"""Action frame generators: the conditioned diffusion family and its baselines."""

from lego.models.editing.base import ActionFrameGenerator
from lego.models.editing.copy_input import CopyInputGenerator

__all__ = ["ActionFrameGenerator", "CopyInputGenerator"]
