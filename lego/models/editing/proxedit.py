"""ProxEdit: DDIM inversion with negative-prompt inversion and proximal guidance, training-free."""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from lego.batch import EgoBatch
from lego.hub import STABLE_DIFFUSION_15
from lego.models.editing.diffusion import DiffusionGenerator
from lego.pipelines import ProxEditPipeline

#: DDIM as ProxEdit's code sets it up (``method.md`` Part C 1.2): no clipping, the last step to
#: ``alpha_bar_0``, "leading" steps offset by one (981, 961, ..., 1 at 50 steps).
PROXEDIT_DDIM: dict[str, object] = {
    "clip_sample": False,
    "set_alpha_to_one": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}


class ProxEditModule(DiffusionGenerator):
    """The paper's ProxEdit baseline (Han et al., WACV 2024), as ProxNPI without a P2P controller.

    LEGO has no source/target caption pair (only a frame and an action), so Prompt-to-Prompt's
    word-aligned attention control does not apply: the input frame is DDIM-inverted with the
    source prompt (empty by default), then edited towards the prompt (the DataModule's
    ``text_source``) with the source prompt as the unconditional embedding (negative-prompt
    inversion), proximal guidance and, in the late steps, the inverted trajectory restored outside
    the edit mask. Optionally the target branch reads the source branch's self-attention keys and
    values (MasaCtrl, ``mutual_attention``). Sampling is :class:`lego.pipelines.ProxEditPipeline`
    (DDIM, as ProxEdit's code); it is deterministic, so ``seed`` changes nothing.

    Args:
        pretrained: A text-to-image diffusers folder or hub id (Stable Diffusion 1.5 by default).
        num_inference_steps: DDIM steps of inversion and of editing (50).
        guidance_scale: Guidance scale ``w`` of the (proximal) guidance term (7.5).
        source_prompt: Prompt the input is inverted with and that serves as the unconditional
            embedding ("": no caption, ProxEdit's negative-prompt inversion from a null source).
        proximal: Thresholding of the guidance term: ``l0`` or ``l1`` as ProxEdit's code (``l0``
            equals soft thresholding, the proximal operator of the L1 norm), ``hard`` (the
            proximal operator of the L0 norm) or ``null`` (plain guidance).
        quantile: Quantile of ``|eps_target - eps_source|`` used as the threshold, per sample
            (0.7; see ``docs/baselines.md`` on the official two-branch quantile).
        recon_t: Timestep below which the inverted trajectory is restored outside the mask (400).
        recon_lr: Strength of that restoration (1.0: copy, as ProxEdit's examples).
        dilate_mask: Radius of the max-pool dilation of the edit mask (1).
        mask_rule: The edit mask: ``official`` ``|prox(delta)| > threshold`` as ProxEdit's code
            (``|delta| > 2 threshold`` for ``l0``) or ``selected`` ``|delta| > threshold`` (the
            entries the threshold keeps).
        inversion_guidance: Restore the inverted latents outside the mask after each late step.
        reconstruction_guidance: Pull the predicted clean latent towards the input's outside the
            mask in the late steps.
        mutual_attention: Mutual self-attention (MasaCtrl) between the source and target branch.
        mutual_start_step: First denoising step of the mutual self-attention (4).
        mutual_start_layer: First self-attention layer of it, in execution order (10 of SD's 16).
        seed: Kept for a uniform interface (sampling is deterministic).
    """

    def __init__(
        self,
        pretrained: str = STABLE_DIFFUSION_15,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        source_prompt: str = "",
        proximal: Literal["l0", "l1", "hard"] | None = "l0",
        quantile: float = 0.7,
        recon_t: int = 400,
        recon_lr: float = 1.0,
        dilate_mask: int = 1,
        mask_rule: Literal["official", "selected"] = "official",
        inversion_guidance: bool = True,
        reconstruction_guidance: bool = False,
        mutual_attention: bool = False,
        mutual_start_step: int = 4,
        mutual_start_layer: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(pretrained, "DDIMScheduler", PROXEDIT_DDIM, num_inference_steps, seed)
        self.save_hyperparameters()
        if proximal not in ("l0", "l1", "hard", None):
            raise ValueError(f"proximal must be l0, l1, hard or null, got {proximal!r}")
        if not -1.0 <= quantile <= 1.0:
            raise ValueError(
                f"quantile must be in [-1, 1] (negative: a fixed threshold), got {quantile}"
            )
        if mask_rule not in ("official", "selected"):
            raise ValueError(f"mask_rule must be official or selected, got {mask_rule!r}")
        self.guidance_scale = guidance_scale
        self.source_prompt = source_prompt
        self.proximal = proximal
        self.quantile = quantile
        self.recon_t = recon_t
        self.recon_lr = recon_lr
        self.dilate_mask = dilate_mask
        self.mask_rule = mask_rule
        self.inversion_guidance = inversion_guidance
        self.reconstruction_guidance = reconstruction_guidance
        self.mutual_attention = mutual_attention
        self.mutual_start_step = mutual_start_step
        self.mutual_start_layer = mutual_start_layer

    def build(self) -> None:
        """Load the text-to-image components (all frozen)."""
        self.load_networks("text_to_image")

    def pipeline(self) -> ProxEditPipeline:
        """The ProxEdit pipeline on the module's networks, with a fresh DDIM scheduler."""
        pipe = self.live_pipeline(ProxEditPipeline)
        assert isinstance(pipe.scheduler, DDIMScheduler)
        return pipe

    @torch.no_grad()
    def generate(self, batch: EgoBatch) -> Tensor:
        """Invert each input frame and edit it towards its prompt.

        Args:
            batch: A batch (target frames not needed).

        Returns:
            ``B x 3 x H x W`` frames, ``(x + 1) / 2`` of the decoder output, not clamped.
        """
        latents = self.pipeline()(
            prompt=list(batch.texts),
            image=self.input_images(batch).to(self.device),
            source_prompt=[self.source_prompt] * len(batch),
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            proximal=self.proximal,
            quantile=self.quantile,
            recon_t=self.recon_t,
            recon_lr=self.recon_lr,
            dilate_mask=self.dilate_mask,
            mask_rule=self.mask_rule,
            inversion_guidance=self.inversion_guidance,
            reconstruction_guidance=self.reconstruction_guidance,
            mutual_attention=self.mutual_attention,
            mutual_start_step=self.mutual_start_step,
            mutual_start_layer=self.mutual_start_layer,
            output_type="latent",
        ).images
        return self.decode(self.vae, latents)
