"""Models of lego: the action frame generators and the VLM instruction tuning module."""

from lego.models.editing import (
    ActionFrameGenerator,
    CopyInputGenerator,
    DiffusionGenerator,
    InstructPix2PixModule,
    LegoDiffusionModule,
    ProxEditModule,
    SDEditModule,
)
from lego.models.instruct import VisualInstructionTuning

__all__ = [
    "ActionFrameGenerator",
    "CopyInputGenerator",
    "DiffusionGenerator",
    "InstructPix2PixModule",
    "LegoDiffusionModule",
    "ProxEditModule",
    "SDEditModule",
    "VisualInstructionTuning",
]
