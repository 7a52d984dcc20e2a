"""The copy-input reference: answers with the input frame unchanged."""

from __future__ import annotations

from torch import Tensor

from lego.batch import EgoBatch
from lego.models.editing.base import ActionFrameGenerator


class CopyInputGenerator(ActionFrameGenerator):
    """Reference generator that returns the input frame as the action frame.

    It has no parameters and does not train; it gives the floor every method must beat (on
    SynthEgo: a good PSNR, since most of the scene is unchanged, and no hand at the object).
    """

    def generate(self, batch: EgoBatch) -> Tensor:
        """Return the input frames mapped to [0, 1]."""
        return (batch.input_frames.float() + 1.0) / 2.0
