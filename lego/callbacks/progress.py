"""Progress as plain lines (step, loss, speed, time left) that read well in a terminal and a log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_info


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLogger(Callback):
    """Print one line every ``every_n_steps`` training steps (and test / predict batches).

    A progress bar redraws one line and leaves little in a log file; these lines read the same in
    both: ``fit step 400/2000 (20 %) | train/loss 0.0912 | 3.9 steps/s | 1:42 elapsed, 6:50
    left``. The first and last step of a run always get a line; validation and test metrics of
    the epoch are printed when logged. Every line is also appended to ``progress.log`` in the
    run's log directory.

    Args:
        every_n_steps: Steps (or test / predict batches) between two lines.
        log_file: Also append the lines to ``<log dir>/progress.log``.
    """

    def __init__(self, every_n_steps: int = 100, log_file: bool = True) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.log_file = log_file
        self.started = 0.0
        self.first_step = 0
        self.path: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        if self.log_file:
            # every rank reads log_dir: it is a collective call (a broadcast) under DDP
            log_dir = trainer.log_dir or trainer.default_root_dir
            self.path = Path(log_dir) / "progress.log" if trainer.is_global_zero else None

    def _emit(self, line: str) -> None:
        rank_zero_info(line)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            except OSError:
                self.path = None  # a full or read-only disk does not stop training

    @staticmethod
    def _total(trainer: Trainer) -> int | None:
        total = trainer.estimated_stepping_batches
        return int(total) if total not in (None, float("inf")) else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.started = time.perf_counter()
        self.first_step = trainer.global_step
        self._emit(f"fit: training from step {trainer.global_step}"
                   + (f" to {self._total(trainer)}" if self._total(trainer) else ""))

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        total = self._total(trainer)
        if step == self.first_step or (step % self.every_n_steps and step != total):
            return
        self._step_line(trainer, step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        step = trainer.global_step
        total = self._total(trainer)
        if step != self.first_step and step % self.every_n_steps and step != total:
            self._step_line(trainer, step)  # the last step, when no line showed it
        self._emit(f"fit: done at step {step}, {_clock(time.perf_counter() - self.started)}")

    def _step_line(self, trainer: Trainer, step: int) -> None:
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
        self._emit(" | ".join(parts))

    def _metrics(self, trainer: Trainer, prefix: str) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1}
        if values:
            self._emit(f"step {trainer.global_step}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in sorted(values.items())))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if not trainer.sanity_checking:
            self._metrics(trainer, "val/")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._metrics(trainer, "test/")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.started = time.perf_counter()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.started = time.perf_counter()

    def _batch_line(self, stage: str, done: int, total: int) -> None:
        if done % self.every_n_steps and done != total:
            return
        elapsed = time.perf_counter() - self.started
        left = (total - done) * elapsed / done if total else 0.0
        self._emit(f"{stage} batch {done}/{total} | {_clock(elapsed)} elapsed, "
                   f"{_clock(left)} left")

    def on_predict_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        totals = trainer.num_predict_batches
        self._batch_line("predict", batch_idx + 1, int(totals[dataloader_idx]) if totals else 0)

    def on_test_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        totals = trainer.num_test_batches
        self._batch_line("test", batch_idx + 1, int(totals[dataloader_idx]) if totals else 0)


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
