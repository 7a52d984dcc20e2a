"""CLIP image-image similarity (ViT-L/14 in the paper) between generated and ground-truth frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from transformers import AutoConfig, CLIPConfig, CLIPVisionModelWithProjection
from transformers.utils import logging as hf_logging

from lego.metrics.convert import clip_vision_from_original, is_original_checkpoint
from lego.metrics.mean import MeanScore

#: OpenAI CLIP normalisation (used when the model directory has no preprocessor config).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _normalisation(model_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    config = Path(model_dir) / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        return tuple(data.get("image_mean", CLIP_MEAN)), tuple(data.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


class CLIPImageSimilarity(MeanScore):
    """Mean cosine similarity of CLIP image embeddings, x ``scale``.

    Frames are squashed (bicubic, no crop) to the model's input size, as the paper's code does,
    normalised with CLIP's mean/std, embedded with the projection head and compared.

    Raises:
        RuntimeError: If the directory lacks any weight of the vision tower or its projection.
        lego.metrics.convert.CheckpointConversionError: If an original file does not convert
            (unmapped or missing keys, named with the file).

    Args:
        model_dir: A transformers CLIP model directory (``openai/clip-vit-large-patch14``), a
            hub id when the network is available, or OpenAI's original ``ViT-L-14.pt`` (or a
            state dict file with its keys), converted on load by :mod:`lego.metrics.convert`.
        scale: Multiplier of the result (100: the paper's tables).
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = True

    def __init__(self, model_dir: Path | str, scale: float = 100.0, **kwargs: Any) -> None:
        super().__init__(scale=scale, **kwargs)
        if is_original_checkpoint(model_dir):
            self._setup(clip_vision_from_original(model_dir), CLIP_MEAN, CLIP_STD)
            return
        config = AutoConfig.from_pretrained(str(model_dir))
        if isinstance(config, CLIPConfig):  # a full CLIP checkpoint (the hub's layout)
            vision = config.vision_config
            vision.projection_dim = config.projection_dim
            config = vision
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the text tower's weights are expected to be unused
        try:
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                str(model_dir), config=config, output_loading_info=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise RuntimeError(f"{model_dir}: CLIP vision weights missing: {missing[:5]}")
        self._setup(model, *_normalisation(Path(model_dir)))

    def _setup(self, model: CLIPVisionModelWithProjection, mean: tuple[float, ...],
               std: tuple[float, ...]) -> None:
        self.model = model.eval().requires_grad_(False)
        self.image_size = int(self.model.config.image_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def embed(self, images: Tensor) -> Tensor:
        """L2-normalised CLIP embeddings of ``B x 3 x H x W`` images in [0, 1]."""
        size = (self.image_size, self.image_size)
        x = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        with torch.no_grad():
            out = self.model(pixel_values=x).image_embeds
        return F.normalize(out.float(), dim=-1)

    def similarities(self, preds: Tensor, target: Tensor) -> Tensor:
        """Per-image cosine similarity (unscaled)."""
        return (self.embed(preds) * self.embed(target)).sum(-1)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add ``B x 3 x H x W`` generated and ground-truth frames in [0, 1]."""
        s = self.similarities(preds, target)
        self.accumulate(s)

