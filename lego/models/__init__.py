"""Models of lego: the action frame generators and the VLM instruction tuning module."""

from lego.models.editing import (
    ActionFrameGenerator,
    CopyInputGenerator,
    InstructPix2PixModule,
    LegoDiffusionModule,
)
from lego.models.instruct import VisualInstructionTuning

__all__ = [
    "ActionFrameGenerator",
    "CopyInputGenerator",
    "InstructPix2PixModule",
    "LegoDiffusionModule",
    "VisualInstructionTuning",
]
