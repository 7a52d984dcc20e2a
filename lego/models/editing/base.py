"""Base class of every action frame generator (LEGO, IP2P, SDEdit, ProxEdit, references)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from lego.batch import EgoBatch, GeneratedFrames


class ActionFrameGenerator(LightningModule, ABC):
    """A LightningModule that turns (input frame, prompt) batches into action frames.

    Subclasses implement :meth:`generate`; ``test_step`` and ``predict_step`` are shared and
    return :class:`lego.batch.GeneratedFrames` (frames in [0, 1]), which writers and the
    evaluation callback consume. Generators that train also implement ``training_step`` and
    set :attr:`trainable`; ``python -m lego fit`` refuses the others with one line.
    """

    #: Whether the method has weights to fit (IP2P, LEGO) or is training-free (SDEdit, ProxEdit).
    trainable: ClassVar[bool] = False

    @abstractmethod
    def generate(self, batch: EgoBatch) -> Tensor:
        """Generate one action frame per sample.

        Args:
            batch: A batch from an EgoGen DataModule.

        Returns:
            ``B x 3 x H x W`` frames on the [0, 1] scale. They may leave [0, 1] (a decoder's
            ``(x + 1) / 2`` is not clamped): the shared steps clamp them for writers and metrics
            and keep the raw values for the ``official`` protocol's min-max stretch.
        """

    def _outputs(self, batch: EgoBatch) -> GeneratedFrames:
        raw = self.generate(batch).float()
        target = batch.target_frames
        return GeneratedFrames(
            sample_ids=list(batch.sample_ids),
            frames=raw.clamp(0.0, 1.0),
            raw_frames=raw,
            image_1=list(batch.image_1),
            image_0=list(batch.image_0),
            texts=list(batch.texts),
            input_frames=(batch.input_frames.float() + 1.0) / 2.0,
            target_frames=(target.float() + 1.0) / 2.0 if target is not None else None,
        )

    @torch.no_grad()
    def test_step(self, batch: EgoBatch, batch_idx: int) -> GeneratedFrames:
        """Generate frames for a test batch; callbacks write and score them."""
        return self._outputs(batch)

    @torch.no_grad()
    def predict_step(self, batch: EgoBatch, batch_idx: int) -> GeneratedFrames:
        """Generate frames for a predict batch; prediction writers save them."""
        return self._outputs(batch)
