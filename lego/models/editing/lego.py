"""LEGO's action frame diffusion: InstructPix2Pix whose context also carries VLM tokens."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from lego.batch import EgoBatch
from lego.errors import ConfigError
from lego.hub import STABLE_DIFFUSION_15
from lego.models.editing.conditioning import VLMConditioner
from lego.models.editing.ip2p import InstructPix2PixModule


class LegoDiffusionModule(InstructPix2PixModule):
    """LEGO: the InstructPix2Pix model conditioned on the VLM's image and text embeddings.

    A :class:`VLMConditioner` projects the batch's VLM embeddings (from the describe stage's
    feature cache) to the UNet's cross-attention width and mixes the text ones; its tokens follow
    the CLIP text embedding in the context (77 + 333 = 410 tokens for the paper's LLaVA) and are
    dropped with the prompt for classifier-free guidance. It trains with the UNet (and is averaged
    by the EMA) unless ``freeze_vlm_projection``. Every option of
    :class:`InstructPix2PixModule` applies (training, EMA, caches, sampling).

    Args:
        pretrained: Diffusers-layout directory or hub id (default: SD 1.5,
            ``lego.hub.STABLE_DIFFUSION_15``, as the paper).
        vlm_dim: Width ``D`` of the VLM embeddings in the batches (5120 for LLaVA-13B). ``None``
            turns VLM conditioning off: the model is then InstructPix2Pix.
        freeze_vlm_projection: Keep the VLM projections and mixer at their random initialisation
            (the official code's behaviour); by default they train with the UNet.
        vlm_num_layers: Layers of the VLM text mixer (2).
        vlm_num_heads: Heads of the VLM text mixer (8).
        vlm_dim_feedforward: Feed-forward width of the mixer layers (2048).
        vlm_dropout: Dropout inside the mixer (0.1).
        use_vlm_text_mask: Give the VLM text padding mask to the mixer (off in the paper).
        **kwargs: The options of :class:`InstructPix2PixModule`.
    """

    def __init__(
        self,
        pretrained: str = STABLE_DIFFUSION_15,
        vlm_dim: int | None = None,
        freeze_vlm_projection: bool = False,
        vlm_num_layers: int = 2,
        vlm_num_heads: int = 8,
        vlm_dim_feedforward: int = 2048,
        vlm_dropout: float = 0.1,
        use_vlm_text_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        if vlm_dim is not None and vlm_dim <= 0:
            raise ValueError(f"vlm_dim must be positive, got {vlm_dim}")
        super().__init__(pretrained=pretrained, **kwargs)
        self.vlm_dim = vlm_dim
        self.freeze_vlm_projection = freeze_vlm_projection
        self.vlm_options = {
            "num_layers": vlm_num_layers,
            "num_heads": vlm_num_heads,
            "dim_feedforward": vlm_dim_feedforward,
            "dropout": vlm_dropout,
            "use_text_mask": use_vlm_text_mask,
        }
        self.vlm_conditioner: VLMConditioner | None = None

    @property
    def uses_vlm(self) -> bool:
        """Whether VLM embeddings condition the model (LEGO) or not (InstructPix2Pix)."""
        return self.vlm_dim is not None

    def build_conditioning(self) -> None:
        """Build the VLM conditioner at the UNet's cross-attention width (when ``vlm_dim``)."""
        if self.vlm_dim is None:
            return
        self.vlm_conditioner = VLMConditioner(
            vlm_dim=self.vlm_dim,
            cross_attention_dim=int(self.unet.config.cross_attention_dim),
            **self.vlm_options,
        )
        if self.freeze_vlm_projection:
            self.vlm_conditioner.requires_grad_(False)

    def check_conditioning(self, batch: EgoBatch) -> None:
        """Check the batch's VLM features: present, ``B x N x vlm_dim``, finite.

        Raises:
            ConfigError: If they are missing or of another width than ``vlm_dim``.
            ValueError: If they have the wrong rank or hold NaN or inf.
        """
        if not self.uses_vlm:
            return
        for key in ("vlm_image", "vlm_text"):
            value = getattr(batch, key)
            if value is None:
                raise ConfigError(
                    f"{type(self).__name__} has vlm_dim={self.vlm_dim} but the batch with "
                    f"samples {batch.sample_ids[:4]} carries no {key!r}: configure the "
                    "DataModule's VLM feature cache, or set vlm_dim: null (InstructPix2Pix)"
                )
            if value.ndim != 3:
                raise ValueError(
                    f"{key} must be N x D per sample (batch B x N x D), got shape "
                    f"{tuple(value.shape)} for samples {batch.sample_ids[:4]}"
                )
            if value.shape[-1] != self.vlm_dim:
                raise ConfigError(
                    f"{key} has width {value.shape[-1]} but the model was configured with "
                    f"vlm_dim={self.vlm_dim} (samples {batch.sample_ids[:4]}); the features "
                    "come from a different VLM than the model expects"
                )
            flat = value.detach().reshape(value.shape[0], -1)
            rows = (~torch.isfinite(flat).all(dim=1)).nonzero().flatten().tolist()
            if rows:
                raise ValueError(f"NaN or inf in {key} of sample(s) "
                                 f"{[batch.sample_ids[i] for i in rows]}")

    def vlm_tokens(self, batch: EgoBatch) -> Tensor | None:
        """VLM cross-attention tokens of the batch (``None`` without VLM conditioning)."""
        if self.vlm_conditioner is None:
            return None
        assert batch.vlm_image is not None and batch.vlm_text is not None
        param = next(self.vlm_conditioner.parameters())
        mask = batch.vlm_text_mask.to(self.device) if batch.vlm_text_mask is not None else None
        return self.vlm_conditioner(
            batch.vlm_image.to(self.device, param.dtype),
            batch.vlm_text.to(self.device, param.dtype),
            mask,
        )

    def condition_tokens(self, batch: EgoBatch) -> Tensor | None:
        """The VLM tokens, appended to the CLIP text in the context."""
        return self.vlm_tokens(batch)

    def ema_modules(self) -> list[torch.nn.Module]:
        """The UNet, and the VLM conditioner when it trains (sampling pairs the averaged two)."""
        modules = super().ema_modules()
        if self.vlm_conditioner is not None and not self.freeze_vlm_projection:
            modules.append(self.vlm_conditioner)
        return modules

    def sampling_modules(self) -> tuple[Any, VLMConditioner | None]:
        """Copies of the UNet and the VLM conditioner with the weights used for sampling.

        These are the EMA weights when the EMA is enabled (the conditioner's too, unless frozen).
        """
        unet, averaged = super().sampling_modules()
        if averaged is not None:
            return unet, averaged
        return unet, copy.deepcopy(self.vlm_conditioner)
