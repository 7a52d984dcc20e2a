"""Evaluation callback: the paper's metric suite over generated frames in test and validate."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from lego.batch import GeneratedFrames
from lego.callbacks.run_record import generator_record
from lego.data.io import DataFormatError, load_json, safe_join, writable_dir
from lego.data.records import open_rgb, read_records
from lego.metrics.protocol import (
    get_protocol,
    output_size,
    pil_to_tensor01,
    postprocess,
    save_frame,
)
from lego.metrics.suite import Dataset, EditMetricSuite, MetricName, ScoredPair, markdown_table

log = logging.getLogger(__name__)




class EditMetricsCallback(Callback):
    """Score the :class:`~lego.batch.GeneratedFrames` of ``test`` (and ``validate``) steps.

    Each generated frame goes through the protocol's post-processing (bicubic resize, uint8
    quantisation: min-max for ``official``, clamp for ``clean``; JPEG round trip for
    ``official``) and is scored against its ground truth: the file under ``ground_truth_dir``
    when given (the paper's ``val_gt_for_metric``, whose frames are ``256 x round(256 W / H)``:
    the generated frame is resized to the file's size), otherwise the batch's target frame,
    both resized to ``256 x round(256 W / H)`` from ``metadata`` (or kept at the generated size
    without metadata). At the end
    of the epoch ``<stage>/<metric>`` is logged (TensorBoard) and ``metrics.json`` is written.
    The callback never reads the datamodule: what it needs is named in its own arguments.

    Args:
        metrics: Metric names (``egovlp``, ``egovlp_plus``, ``clip``, ``fid``, ``psnr``,
            ``lpips_alex``, ``lpips_vgg``, ``lpips_squeeze``, ``blip_base``, ``blip_large``,
            ``synthego``); None: every paper metric (plus ``synthego`` with SynthEgo metadata).
            Metrics whose weights are absent are skipped with one warning.
        weights_dir: Local directory with the metric weights (LEGO-Metrics layout or the
            original files).
        protocol: ``clean`` (default) or ``official`` (the paper's pipeline to the letter).
        dataset: Chooses the EgoVLP checkpoint and clip length (``ego4d``: ``egovlp.pth``, 4
            frames; ``epickitchen``: ``epic_mir_plus.pth``, 16 frames).
        metadata: ``<name>_metadata.json``: frame sizes for the resize back to the original
            aspect, and SynthEgo scene records. Without it frames keep their generated size.
        ground_truth_dir: Folder of ground-truth action frames (``.../val_gt_for_metric``),
            addressed by each sample's ``image_1``.
        inputs_dir: Folder of input frames (``.../val``) for EgoVLP+, addressed by ``image_0``;
            default: the batch's input frames.
        records: Records file whose ``description_key`` holds the enriched description scored
            by the BLIP metrics (e.g. ``ego4d_val.json`` with ``llava_forecast_finetune``).
        description_key: Record field of the enriched description.
        output_dir: Where ``metrics.json`` is written (default: the trainer's log directory).
        frames_dir: If set, every scored generated frame is also written there exactly as it
            was scored (``<clip>/<action>/<frame>``; JPEG q75 for ``official``, PNG for
            ``clean``), so ``python -m lego evaluate`` can re-score the folder.
        stages: Stages scored: ``test`` and/or ``validate`` (validation inside ``fit`` too);
            default ``["test"]``.
    """

    def __init__(
        self,
        metrics: list[MetricName] | None = None,
        weights_dir: Path | None = None,
        protocol: Literal["official", "clean"] = "clean",
        dataset: Dataset = "ego4d",
        metadata: Path | None = None,
        ground_truth_dir: Path | None = None,
        inputs_dir: Path | None = None,
        records: Path | None = None,
        description_key: str = "llava_forecast_finetune",
        output_dir: Path | None = None,
        frames_dir: Path | None = None,
        stages: list[Literal["test", "validate"]] | None = None,
    ) -> None:
        super().__init__()
        get_protocol(protocol)
        self.metric_names = list(metrics) if metrics is not None else None
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.protocol_name = protocol
        self.dataset = dataset
        self.metadata_path = Path(metadata) if metadata is not None else None
        self.ground_truth_dir = Path(ground_truth_dir) if ground_truth_dir is not None else None
        self.inputs_dir = Path(inputs_dir) if inputs_dir is not None else None
        self.records_path = Path(records) if records is not None else None
        self.description_key = description_key
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.frames_dir = Path(frames_dir) if frames_dir is not None else None
        self.stages = tuple(stages) if stages is not None else ("test",)
        self.suite: EditMetricSuite | None = None
        self.metadata: dict[str, Any] | None = None
        self.descriptions: dict[str, str] = {}
        self.scored = 0
        self.missing_target: list[str] = []
        self.last_results: dict[str, float] = {}

    # -- setup ------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the output folders and read the metadata before the first batch.

        Raises:
            OutputError: If ``output_dir`` or ``frames_dir`` cannot be written.
            DataFormatError: If the metadata file is missing or malformed.
        """
        scored = {"fit": "validate", "validate": "validate", "test": "test"}.get(stage)
        if scored not in self.stages:
            return
        if trainer.is_global_zero:
            for option, folder in (("output_dir", self.output_dir),
                                   ("frames_dir", self.frames_dir)):
                if folder is not None:
                    writable_dir(folder, f"EditMetricsCallback.{option}")
        if self.metadata_path is not None and self.metadata is None:
            self.metadata = load_json(self.metadata_path)
        for note in self.deviations():
            rank_zero_warn(f"EditMetricsCallback: {note}")

    def deviations(self) -> list[str]:
        """Where scoring inside ``test`` differs from the chosen protocol, in words.

        Under ``official``, FID inside a run is computed over the scored pairs (the paper's
        compares whole folders: ``python -m lego evaluate --protocol official`` does), and
        EgoVLP+ reads its context frames from the batch (squashed to the training resolution)
        unless ``inputs_dir`` names the original frames. Both are said in a warning and recorded
        in ``metrics.json``.
        """
        if self.protocol_name != "official":
            return []
        notes = []
        wanted = self.metric_names
        if wanted is None or "fid" in wanted:
            notes.append("FID is computed over the scored pairs, not whole folders as the "
                         "official protocol does (python -m lego evaluate --protocol official "
                         "computes it over folders)")
        if self.inputs_dir is None and (wanted is None or "egovlp_plus" in wanted):
            notes.append("EgoVLP+ reads its context frames from the batch (squashed to the "
                         "training resolution); set inputs_dir to the original frames for the "
                         "official protocol")
        return notes

    def _build(self, device: torch.device) -> EditMetricSuite:
        if self.suite is None:
            if self.metadata_path is not None and self.metadata is None:
                self.metadata = load_json(self.metadata_path)
            if self.records_path is not None:
                for rec in read_records(self.records_path):
                    text = rec.fields.get(self.description_key)
                    if isinstance(text, str) and text.strip():
                        self.descriptions[rec.sample_id] = text
            self.suite = EditMetricSuite(
                metrics=self.metric_names, weights_dir=self.weights_dir,
                protocol=self.protocol_name, dataset=self.dataset, metadata=self.metadata,
                warn=lambda msg: rank_zero_warn(msg),
            )
        return self.suite.to(device)

    # -- per batch --------------------------------------------------------------------------

    def _size(self, sample_id: str) -> tuple[int, int] | None:
        if not self.metadata:
            return None
        clip = self.metadata.get(sample_id.partition("/")[0])
        if not isinstance(clip, dict) or "height" not in clip or "width" not in clip:
            raise DataFormatError(
                f"{self.metadata_path}: no height/width for clip of sample {sample_id!r}"
            )
        protocol = get_protocol(self.protocol_name)
        return output_size(int(clip["height"]), int(clip["width"]), protocol.output_height)

    def _load(self, base: Path, relative: str, sample_id: str) -> torch.Tensor:
        where = f"sample {sample_id!r}"
        return pil_to_tensor01(open_rgb(safe_join(base, relative, where), where))

    def pairs(self, outputs: GeneratedFrames) -> list[ScoredPair]:
        """Turn a step's outputs into scored pairs (post-processed by the protocol).

        Raises:
            DataFormatError: If a ground-truth or input file named by a sample is unreadable, or
                the metadata lacks a clip's size.
        """
        protocol = get_protocol(self.protocol_name)
        pairs = []
        for i, sid in enumerate(outputs.sample_ids):
            image_1 = outputs.image_1[i] if outputs.image_1 else None
            if self.ground_truth_dir is not None and image_1:
                target = self._load(self.ground_truth_dir, image_1, sid)
                size: tuple[int, int] | None = (target.shape[-2], target.shape[-1])
            elif outputs.target_frames is not None:
                size = self._size(sid)
                tgt = outputs.target_frames[i].float().cpu()
                target = postprocess(tgt, get_protocol("clean"), size)
            else:
                self.missing_target.append(sid)
                continue
            # min-max acts on the raw output, as the paper's inference; clamp on clamped frames
            raw = outputs.unclamped(i) if protocol.stretch == "minmax" else outputs.frames[i]
            frame = raw.float().cpu()
            generated = postprocess(frame, protocol, size)
            if self.frames_dir is not None:
                name = image_1 or f"{sid}/{Path(outputs.image_0[i]).name}"
                where = f"sample {sid!r}"
                save_frame(frame, safe_join(self.frames_dir, name, where), protocol, size)
            if self.inputs_dir is not None:
                context = self._load(self.inputs_dir, outputs.image_0[i], sid)
            elif outputs.input_frames is not None:
                context = outputs.input_frames[i].float().cpu().clamp(0, 1)
            else:
                context = None
            pairs.append(ScoredPair(sid, generated, target, context, self.descriptions.get(sid)))
        return pairs

    def _on_batch_end(self, pl_module: LightningModule, outputs: Any) -> None:
        if not isinstance(outputs, GeneratedFrames):
            return
        suite = self._build(pl_module.device)
        pairs = self.pairs(outputs)
        suite.update(pairs)
        self.scored += len(pairs)

    def on_test_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if "test" in self.stages:
            self._on_batch_end(pl_module, outputs)

    def on_validation_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if "validate" in self.stages and not trainer.sanity_checking:
            self._on_batch_end(pl_module, outputs)

    # -- per epoch --------------------------------------------------------------------------

    def _on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, prefix: str) -> None:
        if self.suite is None:
            return
        results = self.suite.compute()
        self.last_results = results
        for name, value in results.items():
            pl_module.log(f"{prefix}/{name}", value, sync_dist=False)
        # every rank reads log_dir: it is a collective call (a broadcast) under DDP
        out_dir = self.output_dir or Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            self._write(trainer, prefix, results, out_dir)
        self.suite.reset()
        self.scored = 0
        self.missing_target = []

    def _write(
        self, trainer: Trainer, prefix: str, results: dict[str, float], out_dir: Path
    ) -> None:
        assert self.suite is not None
        out_dir.mkdir(parents=True, exist_ok=True)
        name = "metrics.json" if prefix == "test" else f"metrics_{prefix}.json"
        report = self.suite.report(
            results, stage=prefix, samples_scored_rank0=self.scored,
            global_step=trainer.global_step, ground_truth_dir=str(self.ground_truth_dir or ""),
            metadata=str(self.metadata_path or ""),
            missing_target_rank0=list(self.missing_target),
            fid_sets_used="pairs", context_frames="inputs_dir" if self.inputs_dir else "batch",
            deviations_from_protocol=self.deviations(),
        )
        report["generator"] = generator_record(trainer)
        (out_dir / name).write_text(json.dumps(report, indent=2) + "\n")
        table = markdown_table(results)
        log.info("%s metrics (%s protocol):\n%s", prefix, self.protocol_name, table)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(f"{prefix}/metrics", table, trainer.global_step)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if "test" in self.stages:
            self._on_epoch_end(trainer, pl_module, "test")

    def on_validation_epoch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule
    ) -> None:
        if "validate" in self.stages and not trainer.sanity_checking:
            self._on_epoch_end(trainer, pl_module, "val")
