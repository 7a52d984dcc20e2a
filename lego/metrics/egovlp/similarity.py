"""EgoVLP and EgoVLP+ video-embedding similarity between generated and ground-truth frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
import torchvision.transforms.v2.functional as TF  # noqa: N812
from torch import Tensor

from lego.metrics.egovlp.build import build_egovlp
from lego.metrics.mean import MeanScore

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EgoVLPSimilarity(MeanScore):
    """Cosine similarity of EgoVLP clip embeddings of a generated frame and its ground truth, x100.

    Each frame becomes a pseudo-clip of ``num_frames`` copies. With ``context`` (EgoVLP+) the
    first half of the clip is the input frame and the second half the scored frame
    (Ego4D: ``[pre, pre, x, x]``; Epic-Kitchens: ``[pre] * 8 + [x] * 8``), so the score sees the
    transition. Frames are resized on the short side to the model size (bilinear; antialias off
    as in the paper's torchvision), centre-cropped and ImageNet-normalised.

    Args:
        checkpoint: ``egovlp.pth`` (Ego4D) or ``epic_mir_plus.pth`` (Epic-Kitchens).
        num_frames: Clip length: 4 (Ego4D) or 16 (Epic-Kitchens).
        context: Prefix the input frame (EgoVLP+).
        text_dir: Optional DistilBERT directory (its config sizes the text encoder).
        antialias: Antialias the resize (off in the paper's code).
        scale: Multiplier of the result.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = True

    def __init__(
        self,
        checkpoint: Path,
        num_frames: int = 4,
        context: bool = False,
        text_dir: Path | None = None,
        antialias: bool = False,
        scale: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(scale=scale, **kwargs)
        if context and num_frames % 2:
            raise ValueError(f"EgoVLP+ needs an even number of frames, got {num_frames}")
        self.num_frames = num_frames
        self.context = context
        self.antialias = antialias
        self.model = build_egovlp(Path(checkpoint), num_frames, text_dir)
        self.size = self.model.config.image_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, frames: Tensor) -> Tensor:
        """Resize (short side), centre-crop and normalise ``T x 3 x H x W`` frames in [0, 1]."""
        x = TF.resize(frames.float(), [self.size], antialias=self.antialias)
        x = TF.center_crop(x, [self.size, self.size])
        return (x - self.mean) / self.std

    def clip(self, frame: Tensor, context: Tensor | None) -> Tensor:
        """The ``T x 3 x H x W`` pseudo-clip of one ``3 x H x W`` frame (and its context frame).

        Raises:
            ValueError: If EgoVLP+ is asked for without a context frame.
        """
        if not self.context:
            return frame.unsqueeze(0).expand(self.num_frames, -1, -1, -1)
        if context is None:
            raise ValueError("EgoVLP+ needs the input (context) frame of every sample")
        if context.shape[-2:] != frame.shape[-2:]:
            frame = F.interpolate(frame[None].float(), size=tuple(context.shape[-2:]),
                                  mode="bilinear", align_corners=False)[0]
        half = self.num_frames // 2
        return torch.cat([context.unsqueeze(0).expand(half, -1, -1, -1),
                          frame.unsqueeze(0).expand(half, -1, -1, -1)])

    def embed(self, frames: Tensor, contexts: Tensor | None = None) -> Tensor:
        """Video embeddings (``B x 256``) of ``B x 3 x H x W`` frames in [0, 1]."""
        clips = torch.stack([
            self.preprocess(self.clip(f, None if contexts is None else contexts[i]))
            for i, f in enumerate(frames)
        ])
        with torch.no_grad():
            return self.model.compute_video(clips).float()

    def similarities(self, preds: Tensor, target: Tensor, context: Tensor | None = None) -> Tensor:
        """Per-image cosine similarity (unscaled, norms clamped at 1e-8 as EgoVLP's sim_matrix)."""
        a, b = self.embed(target, context), self.embed(preds, context)
        a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return (a * b).sum(-1)

    def update(self, preds: Tensor, target: Tensor, context: Tensor | None = None) -> None:
        """Add generated and ground-truth frames (``B x 3 x H x W``, [0, 1]) and input frames."""
        s = self.similarities(preds, target, context)
        self.accumulate(s)

