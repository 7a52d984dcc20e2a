"""Progress as plain lines (step, loss, speed, time left) that read well in a terminal and a log."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_info


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLogger(Callback):
    """Print one line every ``every_n_steps`` training steps (and predict batches).

    A progress bar redraws one line and leaves little in a log file; these lines read the same in
    both: ``fit step 400/2000 (20 %) | train/loss 0.0912 | 3.9 steps/s | 1:42 elapsed, 6:50
    left``. Validation and test metrics of the epoch are printed when logged.

    Args:
        every_n_steps: Steps (or predict batches) between two lines.
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.started = 0.0
        self.first_step = 0

    @staticmethod
    def _total(trainer: Trainer) -> int | None:
        total = trainer.estimated_stepping_batches
        return int(total) if total not in (None, float("inf")) else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.started = time.perf_counter()
        self.first_step = trainer.global_step
        rank_zero_info(f"fit: training from step {trainer.global_step}"
                       + (f" to {self._total(trainer)}" if self._total(trainer) else ""))

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step == self.first_step or step % self.every_n_steps:
            return
        elapsed = time.perf_counter() - self.started
        speed = (step - self.first_step) / max(elapsed, 1e-9)
        total = self._total(trainer)
        parts = [f"fit step {step}" + (f"/{total} ({100 * step / total:.0f} %)" if total else "")]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"train/loss {float(loss):.4f}")
        parts.append(f"{speed:.2f} steps/s")
        timing = f"{_clock(elapsed)} elapsed"
        if total:
            timing += f", {_clock((total - step) / max(speed, 1e-9))} left"
        parts.append(timing)
        rank_zero_info(" | ".join(parts))

    def _metrics(self, trainer: Trainer, prefix: str) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1}
        if values:
            rank_zero_info(f"step {trainer.global_step}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in sorted(values.items())))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if not trainer.sanity_checking:
            self._metrics(trainer, "val/")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.started = time.perf_counter()

    def on_predict_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        done = batch_idx + 1
        totals = trainer.num_predict_batches
        total = int(totals[dataloader_idx]) if totals else 0
        if done % self.every_n_steps and done != total:
            return
        elapsed = time.perf_counter() - self.started
        left = (total - done) * elapsed / done if total else 0.0
        rank_zero_info(f"predict batch {done}/{total} | {_clock(elapsed)} elapsed, "
                       f"{_clock(left)} left")


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, without a nonsense epoch total in step-bounded runs.

    The stock bar titles the training bar ``Epoch 2/<max_epochs - 1>``, which reads
    ``Epoch 2/-2`` when training is bounded by ``max_steps`` (``max_epochs: -1``); this one
    writes ``Epoch 2`` then. ``python -m lego`` uses it when a config names no progress bar.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"
        return description
