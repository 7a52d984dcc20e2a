"""Description accuracy on SynthEgo: scores the VLM's descriptions in validation and describe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lego.data.io import load_json
from lego.metrics.description_accuracy import FIELDS, DescriptionAccuracy


def description_table(scores: dict[str, float]) -> str:
    """A one-row Markdown table of per-field accuracies (percent) and the sample count."""
    names = [*FIELDS, "all"]
    head = "| " + " | ".join(names) + " | descriptions |"
    rule = "|" + "---|" * (len(names) + 1)
    row = "| " + " | ".join(f"{scores[n]:.1f} %" for n in names)
    return f"{head}\n{rule}\n{row} | {int(scores['count'])} |"


class DescriptionMetricsCallback(Callback):
    """Per-field accuracy of the descriptions a VLM step returns, against SynthEgo's scene truth.

    Consumes any step output with ``sample_ids`` and ``descriptions`` (the describe stage's
    :class:`~lego.data.features.DescribedSamples`, the instruct stage's validation
    :class:`~lego.batch.GeneratedDescriptions`). Validation logs ``val/description_<field>``;
    ``predict`` (the describe stage) prints a table at the end and writes
    ``description_metrics_<split>.json`` (the split named by the metadata) to ``output_dir``
    when set.

    Args:
        metadata: ``synthego_metadata.json`` of the dataset described.
        output_dir: Where the JSON report of the describe stage goes (none: printed only).
    """

    def __init__(self, metadata: Path, output_dir: Path | None = None) -> None:
        super().__init__()
        self.metadata_path = Path(metadata)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.metric: DescriptionAccuracy | None = None
        self.splits: set[str] = set()
        self.last_results: dict[str, float] = {}

    def _update(self, outputs: Any) -> None:
        ids = getattr(outputs, "sample_ids", None)
        texts = getattr(outputs, "descriptions", None)
        if ids is None or texts is None:
            return
        if self.metric is None:
            self.metric = DescriptionAccuracy(load_json(self.metadata_path))
        self.metric.update(list(texts), list(ids))
        for sample_id in ids:
            clip = self.metric.metadata.get(sample_id.partition("/")[0], {})
            self.splits.add(str(clip.get("split", "unknown")))

    def _compute(self) -> dict[str, float] | None:
        if self.metric is None or self.metric.count.item() == 0:
            return None
        results = {k: float(v) for k, v in self.metric.compute().items()}
        self.metric.reset()
        self.last_results = results
        return results

    def on_validation_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._update(outputs)

    def on_validation_epoch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule
    ) -> None:
        results = self._compute()
        self.splits = set()
        if results is None:
            return
        for name in (*FIELDS, "all"):
            pl_module.log(f"val/description_{name}", results[name], sync_dist=True)
        rank_zero_info(f"val description accuracy at step {trainer.global_step}:\n"
                       f"{description_table(results)}")

    def on_predict_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self._update(outputs)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        results = self._compute()
        if results is None or not trainer.is_global_zero:
            return
        rank_zero_info(
            "description accuracy of the newly described samples against the scene truth "
            f"({self.metadata_path}):\n{description_table(results)}"
        )
        splits, self.splits = "_".join(sorted(self.splits)), set()
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            path = self.output_dir / f"description_metrics_{splits}.json"
            path.write_text(json.dumps({"metadata": str(self.metadata_path), **results},
                                       indent=2) + "\n")
