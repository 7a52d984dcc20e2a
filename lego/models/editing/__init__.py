"""Action frame generators: the conditioned diffusion family and its baselines."""

from lego.models.editing.autoencoder import PixelUnshuffleAutoencoder
from lego.models.editing.base import ActionFrameGenerator
from lego.models.editing.conditioning import VLMConditioner
from lego.models.editing.copy_input import CopyInputGenerator
from lego.models.editing.diffusion import DiffusionGenerator
from lego.models.editing.ip2p import InstructPix2PixModule
from lego.models.editing.lego import LegoDiffusionModule
from lego.models.editing.proxedit import ProxEditModule
from lego.models.editing.sdedit import SDEditModule

__all__ = [
    "ActionFrameGenerator",
    "CopyInputGenerator",
    "DiffusionGenerator",
    "InstructPix2PixModule",
    "LegoDiffusionModule",
    "PixelUnshuffleAutoencoder",
    "ProxEditModule",
    "SDEditModule",
    "VLMConditioner",
]
