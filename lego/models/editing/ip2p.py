"""InstructPix2Pix fine-tuned on egocentric pairs: LEGO's diffusion model without the VLM."""

from __future__ import annotations

from typing import Any, ClassVar

from lego.hub import INSTRUCT_PIX2PIX
from lego.models.editing.components import PredictionType
from lego.models.editing.lego import LegoDiffusionModule
from lego.models.editing.timesteps import TimestepSampling


class InstructPix2PixModule(LegoDiffusionModule):
    """The paper's IP2P baseline: text (chosen by the DataModule's ``text_source``) + input frame.

    The same training and sampling as :class:`LegoDiffusionModule` with VLM conditioning off. It
    exports to a stock ``diffusers.StableDiffusionInstructPix2PixPipeline`` directory.

    Args:
        pretrained: Diffusers-layout directory or hub id (``timbrooks/instruct-pix2pix`` or a
            Stable Diffusion checkpoint, whose ``conv_in`` is widened).
        prediction_type: ``epsilon`` (the paper), ``sample`` or ``v_prediction``.
        conditioning_dropout: ``p`` of the classifier-free-guidance dropout (0.05).
        timestep_sampling: Training timestep density, ``uniform`` (the paper) or ``logit_normal``.
        timestep_logit_mean: Mean of the logit-normal density (0.0).
        timestep_logit_std: Standard deviation of the logit-normal density (1.0).
        learning_rate: AdamW learning rate (1e-4).
        weight_decay: AdamW weight decay (0.01).
        lr_warmup_steps: Linear warm-up steps (0).
        ema_decay: EMA decay of the UNet (0.9999), ``None`` for no EMA.
        gradient_checkpointing: Recompute UNet activations in the backward pass.
        text_cache_size: Prompt embedding cache size (0: off).
        latent_cache_size: Frame latent cache size (0: off).
        sampler: Diffusers scheduler class used for sampling.
        sampler_options: Extra config values for the sampler.
        num_inference_steps: Sampling steps (100).
        text_guidance_scale: Text guidance scale (7.5).
        image_guidance_scale: Image guidance scale (1.5).
        seed: Sampling seed.
        val_sample_batches: Validation batches for which frames are also sampled.
    """

    _hparams_ignore: ClassVar[tuple[str, ...]] = (
        "vlm_dim",
        "freeze_vlm_projection",
        "vlm_num_layers",
        "vlm_num_heads",
        "vlm_dim_feedforward",
        "vlm_dropout",
        "use_vlm_text_mask",
    )

    def __init__(
        self,
        pretrained: str = INSTRUCT_PIX2PIX,
        prediction_type: PredictionType = "epsilon",
        conditioning_dropout: float = 0.05,
        timestep_sampling: TimestepSampling = "uniform",
        timestep_logit_mean: float = 0.0,
        timestep_logit_std: float = 1.0,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        lr_warmup_steps: int = 0,
        ema_decay: float | None = 0.9999,
        gradient_checkpointing: bool = False,
        text_cache_size: int = 0,
        latent_cache_size: int = 0,
        sampler: str = "EulerAncestralDiscreteScheduler",
        sampler_options: dict[str, Any] | None = None,
        num_inference_steps: int = 100,
        text_guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        seed: int = 0,
        val_sample_batches: int = 1,
    ) -> None:
        super().__init__(
            pretrained=pretrained,
            vlm_dim=None,
            prediction_type=prediction_type,
            conditioning_dropout=conditioning_dropout,
            timestep_sampling=timestep_sampling,
            timestep_logit_mean=timestep_logit_mean,
            timestep_logit_std=timestep_logit_std,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            lr_warmup_steps=lr_warmup_steps,
            ema_decay=ema_decay,
            gradient_checkpointing=gradient_checkpointing,
            text_cache_size=text_cache_size,
            latent_cache_size=latent_cache_size,
            sampler=sampler,
            sampler_options=sampler_options,
            num_inference_steps=num_inference_steps,
            text_guidance_scale=text_guidance_scale,
            image_guidance_scale=image_guidance_scale,
            seed=seed,
            val_sample_batches=val_sample_batches,
        )
