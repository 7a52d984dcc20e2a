"""TensorBoard image grids (input | generated | target) with the prompt as caption."""

from __future__ import annotations

import textwrap
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lego.batch import GeneratedFrames

#: Tag prefix of each stage: the same as the stage's scalars (``val/loss``, ``test/psnr``).
PREFIX = {"validate": "val", "test": "test", "predict": "predict"}


def grid_rows(outputs: GeneratedFrames, max_samples: int) -> Tensor:
    """Lay out up to ``max_samples`` rows of ``input | generated | target`` side by side.

    Args:
        outputs: A generator's step output (frames in [0, 1]).
        max_samples: Rows to keep.

    Returns:
        A ``3 x (n H) x (k W)`` image in [0, 1] (k = 3 with inputs and targets, fewer without).
    """
    n = min(max_samples, len(outputs.sample_ids))
    columns = [outputs.input_frames, outputs.frames, outputs.target_frames]
    present = [c[:n].detach().float().cpu().clamp(0, 1) for c in columns if c is not None]
    rows = torch.cat(present, dim=3)  # n x 3 x H x (k W)
    return torch.cat(list(rows), dim=1)


class ImageGridCallback(Callback):
    """Log a grid of input, generated and target frames from step outputs to TensorBoard.

    It consumes :class:`GeneratedFrames` returned by ``validation_step`` (LEGO/IP2P sample frames
    for the first validation batches, so the grid follows ``val_check_interval``), ``test_step``
    and ``predict_step``; at most one grid per stage every ``every_n_steps`` global steps. The
    prompts go to the TEXT tab under the same tag.

    Args:
        max_samples: Rows of the grid.
        every_n_steps: Minimum number of global steps between two grids of a stage.
        stages: Stages to log (``validate``, ``test``, ``predict``); the grids are tagged
            ``val/grid``, ``test/grid`` and ``predict/grid``, beside the stage's scalars.
    """

    def __init__(
        self,
        max_samples: int = 8,
        every_n_steps: int = 1,
        stages: tuple[Literal["validate", "test", "predict"], ...] = ("validate", "test"),
    ) -> None:
        super().__init__()
        unknown = [s for s in stages if s not in PREFIX]
        if unknown:
            raise ValueError(f"stages must be among {sorted(PREFIX)}, got {unknown}")
        self.max_samples = max_samples
        self.every_n_steps = max(1, every_n_steps)
        self.stages = tuple(stages)
        self._last_step: dict[str, int] = {}
        self.logged: list[str] = []

    def _log(self, trainer: Trainer, stage: str, outputs: Any) -> None:
        if stage not in self.stages or not isinstance(outputs, GeneratedFrames):
            return
        step = trainer.global_step
        last = self._last_step.get(stage)
        if last is not None and step - last < self.every_n_steps:
            return
        if not trainer.is_global_zero:
            return
        self._last_step[stage] = step
        image = grid_rows(outputs, self.max_samples)
        n = min(self.max_samples, len(outputs.sample_ids))
        caption = "\n\n".join(
            f"**{outputs.sample_ids[i]}**: " + textwrap.shorten(outputs.texts[i], 400)
            for i in range(n)
        )
        tag = f"{PREFIX[stage]}/grid"
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, image, global_step=step)
                logger.experiment.add_text(tag, caption, global_step=step)
        self.logged.append(f"{tag}@{step}")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Log a grid of the first validation batch with generated frames."""
        if not trainer.sanity_checking:
            self._log(trainer, "validate", outputs)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Log a grid of the first test batch."""
        self._log(trainer, "test", outputs)

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Log a grid of the first predict batch."""
        self._log(trainer, "predict", outputs)
