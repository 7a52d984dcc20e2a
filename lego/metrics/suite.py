"""The paper's evaluation suite: builds the requested metrics from a local weights directory.

Used by the evaluation callback and by ``python -m lego evaluate``. Metrics whose weights are
absent are skipped with one warning each (and listed in the result file), never scored as zero.
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torchmetrics import Metric

from lego.metrics.protocol import Protocol, get_protocol
from lego.metrics.weights import MissingWeightsError, find_weight, require_weight

log = logging.getLogger(__name__)

MetricName = Literal[
    "egovlp", "egovlp_plus", "clip", "fid", "psnr", "lpips_alex", "lpips_vgg", "lpips_squeeze",
    "blip_base", "blip_large", "synthego",
]
#: The paper's metrics, in the order of its tables.
PAPER_METRICS: tuple[str, ...] = (
    "egovlp", "egovlp_plus", "clip", "fid", "psnr", "lpips_alex", "lpips_vgg", "lpips_squeeze",
    "blip_base", "blip_large",
)
ALL_METRICS: tuple[str, ...] = (*PAPER_METRICS, "synthego")
#: Which EgoVLP checkpoint and clip length each dataset uses (the paper's choice).
EGOVLP_BY_DATASET: dict[str, tuple[str, int]] = {
    "ego4d": ("egovlp_ego4d", 4),
    "epickitchen": ("egovlp_epic", 16),
    "synthego": ("egovlp_ego4d", 4),
}
Dataset = Literal["ego4d", "epickitchen", "synthego"]
VERSIONED = ("torch", "torchvision", "torchmetrics", "transformers", "lpips", "lightning", "lego")


@dataclass
class ScoredPair:
    """One generated frame with what it is scored against.

    Attributes:
        sample_id: ``"<clip>/<action>"``.
        generated: ``3 x H x W`` generated frame in [0, 1], exactly as stored by the protocol.
        target: ``3 x H x W`` ground-truth action frame in [0, 1].
        context: ``3 x H x W`` input frame in [0, 1] (EgoVLP+), if known.
        description: Enriched action description (BLIP metrics), if known.
    """

    sample_id: str
    generated: Tensor
    target: Tensor
    context: Tensor | None = None
    description: str | None = None


@dataclass
class SuiteIssues:
    """Per-sample problems met while scoring, reported by sample id."""

    size_mismatch: list[str] = field(default_factory=list)
    missing_context: list[str] = field(default_factory=list)
    missing_description: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """The issues as a JSON-serialisable dict."""
        return {"size_mismatch": self.size_mismatch, "missing_context": self.missing_context,
                "missing_description": self.missing_description}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the numbers."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class EditMetricSuite(nn.Module):
    """A set of torchmetrics metrics scoring generated action frames, built from local weights.

    Args:
        metrics: Metric names (see :data:`ALL_METRICS`); None: every paper metric, plus
            ``synthego`` when ``metadata`` has SynthEgo scene records.
        weights_dir: Local directory holding the metric weights (see :mod:`lego.metrics.weights`).
        protocol: ``official`` or ``clean`` (see :mod:`lego.metrics.protocol`).
        dataset: Chooses the EgoVLP checkpoint and clip length.
        metadata: Parsed dataset metadata (``<name>_metadata.json``), for the SynthEgo score.
        fid_from_pairs: Feed FID from the scored pairs (otherwise the caller feeds it with
            :meth:`update_fid`, e.g. from whole folders).
        warn: Called once per skipped metric with the reason (default: ``warnings.warn``).
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        weights_dir: Path | None = None,
        protocol: str = "clean",
        dataset: Dataset = "ego4d",
        metadata: dict[str, Any] | None = None,
        fid_from_pairs: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.protocol: Protocol = get_protocol(protocol)
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.dataset = dataset
        self.metadata = metadata
        self.fid_from_pairs = fid_from_pairs
        self.issues = SuiteIssues()
        self.skipped: dict[str, str] = {}
        self.weights_used: dict[str, str] = {}
        warn = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
        if metrics is None:
            metrics = list(PAPER_METRICS)
            if metadata and any(isinstance(v, dict) and "actions" in v for v in metadata.values()):
                metrics.append("synthego")
        unknown = sorted(set(metrics) - set(ALL_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(ALL_METRICS)}")
        self.metrics = nn.ModuleDict()
        for name in dict.fromkeys(metrics):
            try:
                self.metrics[name] = self._build(name)
            except MissingWeightsError as err:
                self.skipped[name] = str(err)
                warn(f"metric {name!r} skipped: {err}")

    def _weight(self, key: str) -> Path:
        path = require_weight(self.weights_dir, key)
        self.weights_used[key] = str(path)
        return path

    def _build(self, name: str) -> Metric:
        if name == "psnr":
            from lego.metrics.psnr import MeanPSNR

            return MeanPSNR()
        if name.startswith("lpips_"):
            from lego.metrics.perceptual import LPIPSDistance

            net = name.removeprefix("lpips_")
            return LPIPSDistance(self._weight(net), net=net,  # type: ignore[arg-type]
                                 input_range=self.protocol.lpips_input)
        if name == "fid":
            from lego.metrics.fid import InceptionFID

            return InceptionFID(self._weight("inception"))
        if name == "clip":
            from lego.metrics.clip_similarity import CLIPImageSimilarity

            return CLIPImageSimilarity(self._weight("clip"))
        if name in ("egovlp", "egovlp_plus"):
            from lego.metrics.egovlp.similarity import EgoVLPSimilarity

            key, frames = EGOVLP_BY_DATASET[self.dataset]
            text_dir = find_weight(self.weights_dir, "distilbert")
            return EgoVLPSimilarity(self._weight(key), num_frames=frames,
                                    context=name == "egovlp_plus", text_dir=text_dir)
        if name in ("blip_base", "blip_large"):
            from lego.metrics.blip import BLIPCaptionSimilarity

            key, frames = EGOVLP_BY_DATASET[self.dataset]
            return BLIPCaptionSimilarity(self._weight(name), self._weight(key),
                                         self._weight("distilbert"), num_frames=frames)
        if name == "synthego":
            from lego.metrics.synthego_score import SynthEgoActionScore

            if not self.metadata:
                raise MissingWeightsError(
                    "the SynthEgo score needs the dataset metadata (synthego_metadata.json)"
                )
            return SynthEgoActionScore(self.metadata)
        raise ValueError(f"unknown metric {name!r}")  # pragma: no cover - checked above

    @property
    def names(self) -> list[str]:
        """Names of the metrics that are scored."""
        return list(self.metrics.keys())

    def update_fid(self, images: Tensor, real: bool) -> None:
        """Feed ``B x 3 x H x W`` [0, 1] images of one size to FID's real or generated set."""
        if "fid" in self.metrics:
            self.metrics["fid"].update(images, real=real)

    def update(self, pairs: Sequence[ScoredPair]) -> None:
        """Score pairs; frames of equal size are batched together.

        Generated frames whose size differs from their ground truth are resized to it (bilinear,
        as the paper's code does for Epic-Kitchens) and listed in ``issues.size_mismatch``.
        """
        fixed = []
        for pair in pairs:
            gen = pair.generated
            if gen.shape[-2:] != pair.target.shape[-2:]:
                self.issues.size_mismatch.append(pair.sample_id)
                gen = F.interpolate(gen[None].float(), size=tuple(pair.target.shape[-2:]),
                                    mode="bilinear", align_corners=False)[0].clamp(0, 1)
            fixed.append(ScoredPair(pair.sample_id, gen, pair.target, pair.context,
                                    pair.description))
        groups: dict[tuple[int, ...], list[ScoredPair]] = {}
        for pair in fixed:
            key = tuple(pair.target.shape)
            if pair.context is not None:
                key += tuple(pair.context.shape)
            groups.setdefault(key, []).append(pair)
        for group in groups.values():
            self._update_group(group)

    def _update_group(self, pairs: list[ScoredPair]) -> None:
        device = self._device()
        gen = torch.stack([p.generated for p in pairs]).to(device)
        tgt = torch.stack([p.target for p in pairs]).to(device)
        ids = [p.sample_id for p in pairs]
        for name, metric in self.metrics.items():
            if name == "fid":
                if self.fid_from_pairs:
                    metric.update(tgt, real=True)
                    metric.update(gen, real=False)
            elif name == "egovlp_plus":
                keep = [i for i, p in enumerate(pairs) if p.context is not None]
                self.issues.missing_context.extend(ids[i] for i in range(len(pairs))
                                                   if i not in keep)
                if keep:
                    ctx = torch.stack([pairs[i].context for i in keep]).to(device)
                    metric.update(gen[keep], tgt[keep], ctx)
            elif name.startswith("blip_"):
                keep = [i for i, p in enumerate(pairs) if p.description]
                missing = [ids[i] for i in range(len(pairs)) if i not in keep]
                self.issues.missing_description.extend(
                    m for m in missing if m not in self.issues.missing_description
                )
                if keep:
                    metric.update(gen[keep], [pairs[i].description for i in keep])
            elif name == "synthego":
                metric.update(gen, tgt, ids)
            else:
                metric.update(gen, tgt)

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def compute(self) -> dict[str, float]:
        """Every metric's value (``synthego`` gives ``synthego_hand_error`` and ``_hand_hit``).

        A metric that cannot be computed (e.g. FID with fewer than 2 images per set) is left
        out and recorded in :attr:`skipped`.
        """
        results: dict[str, float] = {}
        for name, metric in self.metrics.items():
            try:
                value = metric.compute()
            except RuntimeError as err:
                self.skipped[name] = f"not computable: {err}"
                continue
            if isinstance(value, dict):
                for key, item in value.items():
                    results[f"{name}_{key}"] = float(item)
            else:
                results[name] = float(value)
        return results

    def captions(self) -> dict[str, list[str]]:
        """The BLIP captions made so far, per BLIP metric (in update order, this process)."""
        return {name: list(m.captions) for name, m in self.metrics.items()
                if name.startswith("blip_")}

    def reset(self) -> None:
        """Reset every metric and the issue lists."""
        for metric in self.metrics.values():
            metric.reset()
        self.issues = SuiteIssues()

    def report(self, results: dict[str, float], **extra: Any) -> dict[str, Any]:
        """The result record written to ``metrics.json``.

        Args:
            results: Output of :meth:`compute`.
            extra: More entries (counts, sources, per-sample problems).

        Returns:
            ``{"metrics", "protocol", "dataset", "weights", "skipped", "issues", "versions", ...}``.
        """
        return {
            "metrics": results,
            "protocol": self.protocol.as_dict(),
            "dataset": self.dataset,
            "scale": "similarities and LPIPS x100; FID raw; PSNR in dB; hand error in pixels",
            "weights_dir": str(self.weights_dir) if self.weights_dir else None,
            "weights": dict(self.weights_used),
            "skipped": dict(self.skipped),
            "issues": self.issues.as_dict(),
            "versions": library_versions(),
            **extra,
        }


def markdown_table(results: dict[str, float]) -> str:
    """Render results as a two-column Markdown table."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in results.items()]
    return "\n".join(lines)
