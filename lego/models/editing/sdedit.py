"""SDEdit: noise the input frame part-way, then denoise it towards the prompt (training-free)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from torch import Tensor

from lego.batch import EgoBatch
from lego.hub import STABLE_DIFFUSION_15
from lego.models.editing.diffusion import NO_SAFETY_CHECKER, DiffusionGenerator


class SDEditModule(DiffusionGenerator):
    """The paper's SDEdit baseline (Meng et al.): training-free, on a text-to-image model.

    The input frame's latent is noised to ``t0 = strength * T`` and denoised with the prompt
    (the DataModule's ``text_source``: the action label by default) by diffusers'
    ``StableDiffusionImg2ImgPipeline``, which runs ``int(num_inference_steps * strength)`` of the
    steps. At ``strength: 1`` the frame is sampled from pure noise by the text-to-image pipeline
    (img2img would still keep ``sqrt(alpha_bar_T)``, about 7 %, of the input at ``T = 999``), so
    the output does not depend on the input. The paper does not publish its SDEdit settings; the
    defaults are diffusers' with the strength of its SDEdit examples (0.75), and the SynthEgo
    sweep is in ``docs/baselines.md``.

    Args:
        pretrained: A text-to-image diffusers folder or hub id (Stable Diffusion 1.5 by default;
            ``pretrained/synthego-sd`` on SynthEgo). Image-conditioned checkpoints are refused.
        strength: ``t0 / T`` in (0, 1]: how far the input is noised (0.75).
        num_inference_steps: Steps of the full schedule (50); about ``strength`` of them run.
        guidance_scale: Classifier-free guidance scale of the prompt (7.5).
        negative_prompt: Prompt of the unconditional branch ("" as Stable Diffusion).
        sampler: Diffusers scheduler class (``DDIMScheduler``, SDEdit's deterministic sampler).
        sampler_options: Extra config values for the sampler.
        seed: Sampling seed; each sample's noise is seeded from ``(sample_id, seed)``.
    """

    def __init__(
        self,
        pretrained: str = STABLE_DIFFUSION_15,
        strength: float = 0.75,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        sampler: str = "DDIMScheduler",
        sampler_options: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(pretrained, sampler, sampler_options, num_inference_steps, seed)
        self.save_hyperparameters()
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if int(num_inference_steps * strength) < 1:
            raise ValueError(
                f"strength {strength} x num_inference_steps {num_inference_steps} runs no step "
                "(img2img runs int(steps x strength)); raise one of them"
            )
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be non-negative, got {guidance_scale}")
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt

    def build(self) -> None:
        """Load the text-to-image components (all frozen) and check the sampler."""
        self.load_networks("text_to_image")

    def pipeline(self) -> StableDiffusionImg2ImgPipeline | StableDiffusionPipeline:
        """The stock diffusers pipeline this module samples with, on its live networks.

        Returns:
            ``StableDiffusionImg2ImgPipeline`` (``StableDiffusionPipeline`` at strength 1) with a
            fresh sampler; its progress bar is off (Lightning shows its own).
        """
        cls = StableDiffusionPipeline if self.strength >= 1.0 else StableDiffusionImg2ImgPipeline
        return self.live_pipeline(cls, **NO_SAFETY_CHECKER)

    def pipeline_kwargs(self, batch: EgoBatch) -> dict[str, Any]:
        """The arguments of the pipeline call for a batch (prompts, image, options, generators)."""
        size = len(batch)
        kwargs: dict[str, Any] = {
            "prompt": list(batch.texts),
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "generator": self.generators(batch),
            "output_type": "latent",
        }
        if self.negative_prompt:
            kwargs["negative_prompt"] = [self.negative_prompt] * size
        height, width = batch.input_frames.shape[-2:]
        if self.strength >= 1.0:
            kwargs.update(height=int(height), width=int(width))
        else:
            kwargs.update(image=self.input_images(batch).to(self.device), strength=self.strength)
        return kwargs

    @torch.no_grad()
    def generate(self, batch: EgoBatch) -> Tensor:
        """Edit each input frame towards its prompt.

        Args:
            batch: A batch (target frames not needed).

        Returns:
            ``B x 3 x H x W`` frames, ``(x + 1) / 2`` of the decoder output, not clamped.
        """
        latents = self.pipeline()(**self.pipeline_kwargs(batch)).images
        return self.decode(self.vae, latents)
