"""``LegoPipeline``: a diffusers pipeline for a trained LEGO model (VLM-conditioned IP2P)."""

from __future__ import annotations

import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer

from lego.models.editing.conditioning import VLMConditioner, assemble_context
from lego.models.editing.guidance import guided_sample


class LegoPipeline(DiffusionPipeline):
    """Generate an action frame from an input frame, a prompt and VLM embeddings.

    Components: ``vae`` (autoencoder), ``text_encoder`` + ``tokenizer`` (CLIP), ``unet``
    (image-conditioned), ``scheduler`` (sampling) and ``vlm_conditioner`` (the VLM projections and
    text mixer). ``save_pretrained`` / ``LegoPipeline.from_pretrained`` round-trip them.

    Args:
        vae: The autoencoder.
        text_encoder: The CLIP text encoder.
        tokenizer: Its tokenizer.
        unet: The UNet (input: noisy latent and input-frame latent on channels).
        scheduler: The sampling scheduler.
        vlm_conditioner: The VLM projection and mixing module.
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
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            vlm_conditioner=vlm_conditioner,
        )
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=factor)

    def _encode_prompt(self, prompts: list[str], device: torch.device) -> Tensor:
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        return self.text_encoder(ids)[0]

    @torch.no_grad()
    def __call__(
        self,
        image: Tensor | PIL.Image.Image | list[PIL.Image.Image],
        prompt: str | list[str],
        vlm_image: Tensor,
        vlm_text: Tensor,
        vlm_text_mask: Tensor | None = None,
        num_inference_steps: int = 100,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Sample action frames with three-way guidance (text and VLM jointly vs. image).

        Args:
            image: Input frames: PIL images or a ``B x 3 x H x W`` tensor in [0, 1].
            prompt: The prompt(s).
            vlm_image: ``B x N_img x D`` VLM image embeddings.
            vlm_text: ``B x 77 x D`` VLM text embeddings.
            vlm_text_mask: Optional ``B x 77`` mask of valid text rows.
            num_inference_steps: Sampling steps.
            guidance_scale: Text (and VLM) guidance scale.
            image_guidance_scale: Image guidance scale.
            generator: A generator or one per sample.
            output_type: ``pil``, ``np`` or ``pt`` (``pt``: tensors in [0, 1]).
            return_dict: Return an ``ImagePipelineOutput`` rather than a tuple.

        Returns:
            The generated frames.

        Raises:
            ValueError: If the numbers of prompts, images and embeddings differ.
        """
        device = self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        pixels = self.image_processor.preprocess(image).to(device, self.vae.dtype)
        if not pixels.shape[0] == len(prompts) == vlm_image.shape[0] == vlm_text.shape[0]:
            raise ValueError(
                f"{pixels.shape[0]} images, {len(prompts)} prompts, {vlm_image.shape[0]} image "
                f"and {vlm_text.shape[0]} text embeddings: they must be as many"
            )
        image_latents = self.vae.encode(pixels).latent_dist.mode()
        clip = self._encode_prompt(prompts, device)
        null = self._encode_prompt([""], device).expand(len(prompts), -1, -1)
        dtype = next(self.vlm_conditioner.parameters()).dtype
        mask = vlm_text_mask.to(device) if vlm_text_mask is not None else None
        tokens = self.vlm_conditioner(vlm_image.to(device, dtype), vlm_text.to(device, dtype), mask)
        context = assemble_context(clip, tokens).to(self.unet.dtype)
        null_context = assemble_context(null, torch.zeros_like(tokens)).to(self.unet.dtype)
        generators = generator if isinstance(generator, list) or generator is None else [generator]
        if generators is not None and len(generators) == 1 and len(prompts) > 1:
            generators = generators[0]  # type: ignore[assignment]
        latents = guided_sample(
            self.unet,
            self.scheduler,
            image_latents=image_latents,
            context=context,
            null_context=null_context,
            num_inference_steps=num_inference_steps,
            text_scale=guidance_scale,
            image_scale=image_guidance_scale,
            generators=generators,  # type: ignore[arg-type]
        )
        decoded = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor)
        images = self.image_processor.postprocess(decoded.sample, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
