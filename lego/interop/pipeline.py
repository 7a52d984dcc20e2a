"""``LegoPipeline``: the stock InstructPix2Pix pipeline plus LEGO's VLM conditioner."""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer

from lego.models.editing.conditioning import VLMConditioner, assemble_context
from lego.pipelines.prompts import encode_prompts


class LegoPipeline(StableDiffusionInstructPix2PixPipeline):
    """Generate an action frame from an input frame, a prompt and VLM embeddings.

    A subclass of diffusers' ``StableDiffusionInstructPix2PixPipeline`` that only assembles the
    cross-attention context: the CLIP text embedding of the prompt followed by the
    ``vlm_conditioner``'s tokens (77 + 333 = 410 for the paper's LLaVA features), and for the
    unconditional branches CLIP("") followed by zero tokens. Sampling, three-way guidance and
    decoding are the stock pipeline's. ``save_pretrained`` / ``LegoPipeline.from_pretrained``
    round-trip the components.

    Args:
        vae: The autoencoder.
        text_encoder: The CLIP text encoder.
        tokenizer: Its tokenizer.
        unet: The UNet (input: noisy latent and input-frame latent on channels).
        scheduler: The sampling scheduler.
        vlm_conditioner: The VLM projection and mixing module.
        safety_checker: Unused (``None``); kept for the parent's interface.
        feature_extractor: Unused (``None``).
        image_encoder: Unused (``None``).
        requires_safety_checker: Unused (``False``).
    """

    model_cpu_offload_seq = "text_encoder->vlm_conditioner->unet->vae"

    def __init__(
        self,
        vae: ModelMixin,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        vlm_conditioner: VLMConditioner,
        safety_checker: Any = None,
        feature_extractor: Any = None,
        image_encoder: Any = None,
        requires_safety_checker: bool = False,
    ) -> None:
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        self.register_modules(vlm_conditioner=vlm_conditioner)

    def _clip(self, prompts: list[str], device: torch.device) -> Tensor:
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, device)

    @torch.no_grad()
    def encode_context(
        self,
        prompt: str | list[str],
        vlm_image: Tensor,
        vlm_text: Tensor,
        vlm_text_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The conditional and unconditional cross-attention contexts.

        Args:
            prompt: The prompt(s).
            vlm_image: ``B x N_img x D`` VLM image embeddings.
            vlm_text: ``B x 77 x D`` VLM text embeddings.
            vlm_text_mask: Optional ``B x 77`` mask of valid text rows.

        Returns:
            ``(context, null_context)``, each ``B x (77 + tokens) x C``.

        Raises:
            ValueError: If the numbers of prompts and embeddings differ.
        """
        device = self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not len(prompts) == vlm_image.shape[0] == vlm_text.shape[0]:
            raise ValueError(
                f"{len(prompts)} prompts, {vlm_image.shape[0]} image and {vlm_text.shape[0]} "
                "text embeddings: they must be as many"
            )
        dtype = next(self.vlm_conditioner.parameters()).dtype
        mask = vlm_text_mask.to(device) if vlm_text_mask is not None else None
        tokens = self.vlm_conditioner(vlm_image.to(device, dtype), vlm_text.to(device, dtype), mask)
        clip = self._clip(prompts, device)
        null = self._clip([""], device).expand(len(prompts), -1, -1)
        context = assemble_context(clip, tokens).to(self.unet.dtype)
        return context, assemble_context(null, torch.zeros_like(tokens)).to(self.unet.dtype)

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        image: Tensor | PIL.Image.Image | list[PIL.Image.Image],
        prompt: str | list[str],
        vlm_image: Tensor,
        vlm_text: Tensor,
        vlm_text_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Sample action frames with three-way guidance (text and VLM jointly vs. image).

        Args:
            image: Input frames: PIL images or a ``B x 3 x H x W`` tensor in [0, 1].
            prompt: The prompt(s).
            vlm_image: ``B x N_img x D`` VLM image embeddings.
            vlm_text: ``B x 77 x D`` VLM text embeddings.
            vlm_text_mask: Optional ``B x 77`` mask of valid text rows.
            **kwargs: The stock pipeline's options: ``num_inference_steps`` (100),
                ``guidance_scale`` (7.5), ``image_guidance_scale`` (1.5), ``generator`` (one or
                one per sample), ``output_type``, ``return_dict``, callbacks ...

        Returns:
            The stock pipeline's output (``images``).

        Raises:
            ValueError: If the numbers of prompts and embeddings differ.
        """
        context, null_context = self.encode_context(prompt, vlm_image, vlm_text, vlm_text_mask)
        return super().__call__(
            image=image, prompt_embeds=context, negative_prompt_embeds=null_context, **kwargs
        )
