"""BLIP caption faithfulness: caption the generated frame, compare it with the description.

The generated frame is captioned by BLIP (base or large) with the paper's settings (prompt
``"a picture of "``, beam search 3, 5 to 20 tokens); the caption and the sample's enriched action
description are embedded with the EgoVLP text branch and compared by cosine similarity, x100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import Tensor
from transformers import AutoProcessor, AutoTokenizer, BlipForConditionalGeneration

from lego.metrics.convert import (
    blip_from_original,
    blip_processor,
    blip_tokenizer,
    is_original_checkpoint,
)
from lego.metrics.egovlp.build import build_egovlp
from lego.metrics.mean import MeanScore

PROMPT = "a picture of "


class BLIPCaptionSimilarity(MeanScore):
    """Mean EgoVLP text similarity between BLIP captions of generated frames and descriptions.

    Args:
        blip_dir: A transformers BLIP captioning directory (``Salesforce/blip-image-captioning-
            base`` for BLIP-B, ``-large`` for BLIP-L; the HF conversions of the paper's
            weights), or the paper's original file itself (``model_base_caption_capfilt_large.pth``
            / ``model_large_caption.pth``, converted on load by :mod:`lego.metrics.convert`).
        egovlp_checkpoint: The dataset's EgoVLP checkpoint (its text branch embeds the texts).
        tokenizer_dir: DistilBERT tokenizer directory (``distilbert-base-uncased``).
        num_frames: Frames of the EgoVLP model (4 Ego4D, 16 Epic-Kitchens; text is unaffected).
        prompt: Caption prompt (removed from the caption).
        num_beams: Beam width.
        max_length: Maximum caption length in tokens (prompt included).
        min_length: Minimum caption length in tokens.
        scale: Multiplier of the result.
        blip_tokenizer_dir: For an original BLIP file: the ``bert-base-uncased`` tokenizer
            directory (default ``tokenizer_dir``: DistilBERT's uncased vocabulary is BERT's).
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = True

    def __init__(
        self,
        blip_dir: Path | str,
        egovlp_checkpoint: Path,
        tokenizer_dir: Path | str,
        num_frames: int = 4,
        prompt: str = PROMPT,
        num_beams: int = 3,
        max_length: int = 20,
        min_length: int = 5,
        scale: float = 100.0,
        blip_tokenizer_dir: Path | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scale=scale, **kwargs)
        self.prompt = prompt
        self.num_beams = num_beams
        self.max_length = max_length
        self.min_length = min_length
        if is_original_checkpoint(blip_dir):
            tokenizer = blip_tokenizer(blip_tokenizer_dir or tokenizer_dir)
            self.blip = blip_from_original(blip_dir, tokenizer)
            self.processor = blip_processor(tokenizer,
                                            int(self.blip.config.vision_config.image_size))
        else:
            self.processor = AutoProcessor.from_pretrained(str(blip_dir))
            self.blip = BlipForConditionalGeneration.from_pretrained(str(blip_dir))
        self.blip.eval().requires_grad_(False)
        self.egovlp = build_egovlp(Path(egovlp_checkpoint), num_frames,
                                   Path(tokenizer_dir) if tokenizer_dir else None)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.captions: list[str] = []

    def caption(self, frames: Tensor) -> list[str]:
        """BLIP captions (prompt removed) of ``B x 3 x H x W`` frames in [0, 1]."""
        images = [
            Image.fromarray(f.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
            for f in frames
        ]
        inputs = self.processor(images=images, text=[self.prompt] * len(images),
                                return_tensors="pt")
        device = next(self.blip.parameters()).device
        with torch.no_grad():
            ids = self.blip.generate(
                pixel_values=inputs["pixel_values"].to(device),
                input_ids=inputs["input_ids"].to(device),
                attention_mask=inputs["attention_mask"].to(device),
                num_beams=self.num_beams, max_length=self.max_length,
                min_length=self.min_length,
            )
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        head = self.prompt.strip()
        return [t[len(head):].strip() if t.startswith(head) else t.strip() for t in texts]

    def embed_text(self, texts: list[str]) -> Tensor:
        """EgoVLP text embeddings (``N x 256``), one string at a time as the paper's code does."""
        device = next(self.egovlp.parameters()).device
        out = []
        for text in texts:
            tokens = self.tokenizer([text], padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                out.append(self.egovlp.compute_text(tokens["input_ids"].to(device),
                                                    tokens["attention_mask"].to(device)))
        return torch.cat(out).float()

    def similarities(self, captions: list[str], descriptions: list[str]) -> Tensor:
        """Per-sample cosine similarity (unscaled) of captions and descriptions."""
        return F.cosine_similarity(self.embed_text(captions), self.embed_text(descriptions), dim=-1)

    def update(self, preds: Tensor, descriptions: list[str]) -> None:
        """Caption ``B x 3 x H x W`` generated frames and compare with their descriptions.

        Raises:
            ValueError: If the numbers of frames and descriptions differ.
        """
        if len(descriptions) != preds.shape[0]:
            raise ValueError(f"{preds.shape[0]} frames but {len(descriptions)} descriptions")
        captions = self.caption(preds)
        self.captions.extend(captions)
        s = self.similarities(captions, list(descriptions))
        self.accumulate(s)


    def reset(self) -> None:
        """Reset the states and the caption log."""
        super().reset()
        self.captions = []


