"""Today's three-way guidance loop, kept as the regression oracle of the pipeline-based sampling.

``eps = eps(0, 0) + s_T [eps(c_T, c_I) - eps(0, c_I)] + s_I [eps(0, c_I) - eps(0, 0)]``, the three
branches in one batched UNet call (the loop the library used before sampling moved to diffusers'
``StableDiffusionInstructPix2PixPipeline``).
"""

from __future__ import annotations

import inspect

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor


def combine_guidance(
    full: Tensor, image_only: Tensor, unconditional: Tensor, text_scale: float, image_scale: float
) -> Tensor:
    """Combine the three UNet predictions (the InstructPix2Pix formula).

    Args:
        full: Prediction with text (and VLM) and image conditions.
        image_only: Prediction with the image condition only (null text, zero VLM tokens).
        unconditional: Prediction with neither.
        text_scale: ``s_T`` (7.5 in the paper).
        image_scale: ``s_I`` (1.5 in the paper).

    Returns:
        The guided prediction.
    """
    return (
        unconditional
        + text_scale * (full - image_only)
        + image_scale * (image_only - unconditional)
    )


@torch.no_grad()
def guided_sample(
    unet,
    scheduler,
    image_latents: Tensor,
    context: Tensor,
    null_context: Tensor,
    num_inference_steps: int,
    text_scale: float,
    image_scale: float,
    generators: list[torch.Generator] | None = None,
    latents: Tensor | None = None,
) -> Tensor:
    """Denoise from noise to latents with three-way guidance (one batched UNet call per step).

    Args:
        unet: The image-conditioned UNet (input = ``[noisy latent, image latent]`` on channels).
        scheduler: A fresh diffusers scheduler (its config carries the prediction type).
        image_latents: ``B x c x h x w`` unscaled latents of the input frames.
        context: ``B x L x C`` conditional cross-attention context.
        null_context: ``B x L x C`` context of the null prompt (CLIP("") and zero VLM tokens).
        num_inference_steps: Sampling steps.
        text_scale: Text guidance scale.
        image_scale: Image guidance scale.
        generators: One generator per sample (initial noise and ancestral noise).
        latents: Optional initial noise (``B x c x h x w``, unit variance).

    Returns:
        The final latents, scaled like the training targets.
    """
    device = image_latents.device
    dtype = context.dtype
    scheduler.set_timesteps(num_inference_steps, device=device)
    if latents is None:
        latents = randn_tensor(
            tuple(image_latents.shape), generator=generators, device=device, dtype=dtype
        )
    latents = latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    image_in = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])
    image_in = image_in.to(dtype)
    context_in = torch.cat([context, null_context, null_context])
    step_kwargs = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = generators
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([latents] * 3), t)
        model_in = torch.cat([model_in, image_in], dim=1)
        out = unet(model_in, t, encoder_hidden_states=context_in, return_dict=False)[0]
        full, image_only, unconditional = out.chunk(3)
        guided = combine_guidance(full, image_only, unconditional, text_scale, image_scale)
        latents = scheduler.step(guided, t, latents, **step_kwargs, return_dict=False)[0]
    return latents
