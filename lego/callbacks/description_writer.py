"""Prediction writer of the describe stage: feature cache shards plus enriched records."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from lego.data.features import (
    DescribedSamples,
    FeatureCacheWriter,
    finalize_cache,
    write_enriched_records,
)

log = logging.getLogger(__name__)


class DescriptionWriter(BasePredictionWriter):
    """Writes the VLM's descriptions and embeddings into a feature cache, resumably.

    For each predicted split it writes ``<cache_root>/<split>/`` (see :mod:`lego.data.features`)
    and a copy of the split's records JSON with every description under ``description_key`` in
    ``records_dir``, so the diffusion stage reads them with ``records_dir`` and ``features``.

    The split and its records file come from the DataModule (``predict_split``,
    ``records_file``), what produced the features from the module (``describe_plan``). Resuming:
    the DataModule's ``skip_described`` (the same folder as ``cache_root``) leaves out the
    samples the cache already holds, so they are not generated again. Under DDP each rank
    writes its own shards and rank zero merges the index after all ranks finished.

    Args:
        cache_root: Folder holding one feature cache per split.
        records_dir: Where the enriched records copy ``<name>_<split>.json`` goes (default
            ``<cache_root>/records``).
        description_key: Record field for the description (the paper's
            ``llava_forecast_finetune``).
        shard_size: Samples per shard (a killed job loses at most this many per rank).
        resume: Skip samples already in the cache (otherwise an existing cache is an error).
            A damaged shard (cut short by a kill or a full disk) is set aside as
            ``<name>.damaged`` and its samples are described again. One run writes a cache at a
            time: a second one on the same cache stops with an error (``<cache>/.lock``).
    """

    def __init__(
        self,
        cache_root: Path,
        records_dir: Path | None = None,
        description_key: str = "llava_forecast_finetune",
        shard_size: int = 256,
        resume: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        self.cache_root = Path(cache_root)
        self.records_dir = Path(records_dir) if records_dir is not None else None
        self.description_key = description_key
        self.shard_size = shard_size
        self.resume = resume
        self.writer: FeatureCacheWriter | None = None
        self.split: str | None = None
        self.records_file: str | None = None
        self.skipped = 0
        self.tokens = 0
        self.samples = 0
        self.started = 0.0

    def cache_dir(self, split: str) -> Path:
        """The cache folder of ``split``."""
        return self.cache_root / split

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check and finalize the cache when there was nothing left to describe.

        Lightning skips the predict hooks when the loader is empty, which is what a describe
        run sees once every sample is in the cache (``skip_described``): the manifest is still
        checked against this run, the index merged and the records copy written.
        """
        if stage == "predict" and self.writer is None:
            self.on_predict_start(trainer, pl_module)
            self.on_predict_end(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open the cache of the split and check it against this run's model and settings.

        Raises:
            TypeError: If the module cannot describe (no ``describe_plan``).
            FileExistsError: If the cache exists and ``resume`` is off.
        """
        plan = getattr(pl_module, "describe_plan", None)
        if plan is None:
            raise TypeError(
                f"{type(pl_module).__name__} has no describe_plan(); DescriptionWriter needs the "
                "VLM module (VisualInstructionTuning)"
            )
        info = plan()
        datamodule = getattr(trainer, "datamodule", None)
        self.split = str(getattr(datamodule, "predict_split", "predict"))
        records_file = getattr(datamodule, "records_file", None)
        self.records_file = str(records_file(self.split)) if callable(records_file) else None
        skip = getattr(datamodule, "skip_described", None)
        if self.resume and skip is not None and Path(skip) != self.cache_root:
            log.warning("the DataModule skips the samples described in %s but this writer "
                        "writes to %s: finished samples may be described again", skip,
                        self.cache_root)
        cache_dir = self.cache_dir(self.split)
        self.writer = FeatureCacheWriter(
            cache_dir, rank=trainer.global_rank, shard_size=self.shard_size
        )
        if not self.resume and self.writer.manifest() is not None:
            raise FileExistsError(f"{cache_dir}: feature cache exists and resume is off")
        if trainer.is_global_zero:
            self.writer.lock()  # a second describe run on this cache stops here
            self.writer.prepare(info["manifest"], info["projector"], write=True)
        trainer.strategy.barrier("description_writer_prepare")
        self.writer.prepare(info["manifest"], info["projector"], write=False)
        self.samples = self.tokens = 0
        self.started = time.perf_counter()

    def on_exception(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self.writer is not None:
            self.writer.unlock()

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Buffer one batch's outputs (written as a shard when full)."""
        if prediction is None or self.writer is None:
            return
        if not isinstance(prediction, DescribedSamples):
            raise TypeError(
                f"DescriptionWriter expects DescribedSamples, got {type(prediction).__name__}"
            )
        self.writer.add(prediction)
        self.samples += len(prediction)
        self.tokens += sum(prediction.num_tokens)
        if trainer.is_global_zero and trainer.progress_bar_callback is None:
            log.info("described %d samples", self.samples)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Flush, wait for every rank, then merge the index and write the records copy."""
        if self.writer is None or self.split is None:
            return
        self.writer.flush()
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        trainer.strategy.barrier("description_writer_end")
        log.info(
            "rank %d: described %d samples, %d tokens in %.1fs (%.1f tokens/s)",
            trainer.global_rank,
            self.samples,
            self.tokens,
            elapsed,
            self.tokens / elapsed,
        )
        if not trainer.is_global_zero:
            return
        cache_dir = self.cache_dir(self.split)
        try:
            entries = finalize_cache(cache_dir)
        finally:
            self.writer.unlock()
        summary = (
            f"describe {self.split}: {len(entries)} samples in {cache_dir} "
            f"({self.samples} new on rank 0, {self.tokens / elapsed:.1f} tokens/s)"
        )
        if self.records_file:
            records_file = Path(self.records_file)
            out_dir = self.records_dir or self.cache_root / "records"
            count = write_enriched_records(
                records_file,
                out_dir / records_file.name,
                {sid: e["description"] for sid, e in entries.items()},
                self.description_key,
            )
            summary += f"; {count} descriptions merged into {out_dir / records_file.name}"
        rank_zero_info(summary)
