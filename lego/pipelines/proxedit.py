"""ProxEdit (Han et al., WACV 2024): tuning-free real-image editing with proximal guidance.

The method (``github.com/phymhan/prompt-to-prompt``, ``negative_prompt_inversion.py``,
``ptp_utils.diffusion_step``, ``prox_masactrl.py``; see ``method.md`` Part C §1):

1. Encode the image, ``z_0 = vae.encode(x).latent_dist.mode() * scaling_factor``.
2. Deterministic DDIM inversion with the source prompt's conditional embedding (no CFG), keeping
   the whole trajectory ``z*_0 .. z*_N``.
3. Negative-prompt inversion (NPI): denoise from ``z*_N`` with classifier-free guidance whose
   "unconditional" embedding is the source prompt's, so that with the source prompt as target the
   sampler retraces the inversion.
4. Proximal guidance: the guidance direction ``Δ = ε(z, t, c_tgt) − ε(z, t, c_src)`` is
   thresholded at ``λ`` (a quantile of ``|Δ|``), which keeps the edit sparse;
   ``ε̂ = ε(z, t, c_src) + w · prox(Δ)``.
5. Below ``recon_t``, outside the edit mask (dilated; by default the official ``1[|prox(Δ)| > λ]``,
   optionally the selected entries ``1[|Δ| > λ]``): reconstruction guidance pulls the predicted
   ``x0`` toward ``z_0``, inversion guidance pulls the new latent toward ``z*``.
6. Optionally (ProxMasaCtrl) a source branch is denoised alongside and the target's
   self-attention reads its keys and values (:mod:`lego.pipelines.mutual_attention`).

Every UNet output is converted to ``ε`` (and ``x0``) according to the scheduler's
``prediction_type`` (``epsilon``, ``sample`` or ``v_prediction``) before this arithmetic, so the
guidance acts on ``ε`` whatever the model predicts. The DDIM steps (``η = 0``) are written here from
``scheduler.alphas_cumprod`` along the scheduler's own timesteps (the level after the last one is
``scheduler.final_alpha_cumprod``), the same levels in both directions, so inversion followed by
sampling with the source prompt reconstructs the input.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Literal

import PIL.Image
import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    ImagePipelineOutput,
    UNet2DConditionModel,
)
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer

from lego.pipelines.mutual_attention import MutualAttentionState, mutual_self_attention
from lego.pipelines.prompts import encode_prompts

#: Variants of the proximal operator applied to the guidance direction.
ProximalMode = Literal["l0", "l1", "hard"]
PROXIMAL_MODES: tuple[str, ...] = ("l0", "l1", "hard")
#: Edit-mask rules: ProxEdit's ``1[|prox(Δ)| > λ]`` or the selected entries ``1[|Δ| > λ]``.
MaskRule = Literal["official", "selected"]
MASK_RULES: tuple[str, ...] = ("official", "selected")
OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction")
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "token")


def proximal_threshold(delta: Tensor, quantile: float) -> Tensor:
    """The threshold ``λ`` of proximal guidance, one per sample.

    ``0 < quantile <= 1``: ``λ`` is that quantile of ``|Δ|`` over each sample's own entries
    (``C x H x W``). This deliberately deviates from the official code, which takes one quantile
    over the whole batch tensor: per sample, a sample's edit does not depend on its batch-mates.
    Note that the official ProxNPI batch is ``[source, target]`` and the source half's ``Δ`` is
    exactly 0, so its ``quantile=0.7`` is about the 0.4 quantile of the target alone
    (``q_single ≈ 2 q − 1``); use about 0.4 here to match the official NPI examples (the official
    ProxMasaCtrl thresholds the target half alone, so its quantile carries over unchanged).

    ``quantile <= 0``: a fixed threshold ``λ = -quantile``, as in the official code.

    Args:
        delta: Guidance directions ``B x ...``.
        quantile: The quantile in ``(0, 1]``, or minus a fixed threshold.

    Returns:
        ``λ`` shaped ``B x 1 x ... x 1`` (broadcastable against ``delta``), in ``delta``'s dtype.

    Raises:
        ValueError: If ``quantile`` is above 1 or not a number.
    """
    if not quantile <= 1:
        raise ValueError(
            f"quantile must be at most 1 (or negative: a fixed threshold), got {quantile}"
        )
    shape = (delta.shape[0],) + (1,) * (delta.ndim - 1)
    if quantile <= 0:
        return torch.full(shape, -float(quantile), dtype=delta.dtype, device=delta.device)
    flat = delta.detach().abs().flatten(1).float()
    return torch.quantile(flat, float(quantile), dim=1).to(delta.dtype).view(shape)


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Dilate a binary ``B x C x H x W`` mask by a square of side ``2 radius + 1`` (per channel).

    Args:
        mask: The mask (0 / 1 values).
        radius: Dilation radius; 0 returns the mask unchanged.

    Returns:
        The dilated mask (max-pooling with stride 1 and padding ``radius``).

    Raises:
        ValueError: If ``radius`` is negative.
    """
    if radius < 0:
        raise ValueError(f"dilation radius must be >= 0, got {radius}")
    if radius == 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * radius + 1, stride=1, padding=radius)


def proximal_guidance(
    delta: Tensor,
    quantile: float,
    mode: ProximalMode | None,
    dilate_mask: int = 0,
    mask_rule: MaskRule = "official",
) -> tuple[Tensor, Tensor]:
    """Apply ProxEdit's proximal operator to the guidance direction ``Δ``.

    With ``λ`` from :func:`proximal_threshold` (per sample):

    * ``"l0"`` (official ``l0``): ``Δ − clamp(Δ, −λ, λ)``: entries with ``|Δ| <= λ`` become 0, the
      others move ``λ`` toward 0. This is the soft threshold, i.e. the proximal operator of the
      L1 norm (the official name notwithstanding).
    * ``"l1"`` (official ``l1``): the ``l0`` result, then ``Δ − λ sign(Δ)`` on its nonzero
      entries: kept entries shrink by ``2λ`` in total (an entry with ``λ < |Δ| < 2λ`` changes
      sign, as in the official code).
    * ``"hard"``: the textbook proximal operator of the L0 norm (hard threshold): entries with
      ``|Δ| > λ`` are kept unchanged, the others become 0.
    * ``None``: ``Δ`` unchanged.

    The edit mask, per element and dilated by ``dilate_mask``, follows ``mask_rule``:

    * ``"official"`` (ProxEdit's ``ptp_utils.diffusion_step``): ``1[|prox(Δ)| > λ]``, the
      *thresholded* value tested against ``λ``, i.e. ``|Δ| > 2λ`` for ``l0``, ``|Δ| > 3λ`` for
      ``l1`` (its sign flip leaves ``|prox(Δ)| = 2λ − |Δ| < λ`` for ``λ < |Δ| < 2λ``),
      ``|Δ| > λ`` for ``hard`` and for ``None`` (``prox(Δ) = Δ``). The mask is computed from the
      prox tensor itself.
    * ``"selected"``: ``1[|Δ| > λ]``, the entries the threshold selects (the same for every mode).

    Args:
        delta: Guidance directions ``B x C x H x W`` (``ε_tgt − ε_src``).
        quantile: See :func:`proximal_threshold`.
        mode: ``"l0"``, ``"l1"``, ``"hard"`` or None.
        dilate_mask: Dilation radius of the mask.
        mask_rule: ``"official"`` or ``"selected"`` (above).

    Returns:
        ``(prox(Δ), mask)``, the mask a 0 / 1 tensor like ``delta``.

    Raises:
        ValueError: If ``mode`` or ``mask_rule`` is unknown or ``quantile`` invalid.
    """
    if mode is not None and mode not in PROXIMAL_MODES:
        raise ValueError(f"proximal must be one of {PROXIMAL_MODES} or None, got {mode!r}")
    if mask_rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
    lam = proximal_threshold(delta, quantile)
    keep = delta.abs() > lam
    if mode is None:
        prox = delta
    elif mode == "hard":
        prox = delta * keep
    else:
        prox = delta - torch.clamp(delta, -lam, lam)
        if mode == "l1":
            prox = prox - lam * torch.sign(prox)
    edited = prox.abs() > lam if mask_rule == "official" else keep
    return prox, dilate(edited.to(delta.dtype), dilate_mask)


def split_prediction(
    output: Tensor, latents: Tensor, alpha: float, prediction_type: str
) -> tuple[Tensor, Tensor]:
    """Convert a model output to the noise ``ε`` and the clean sample ``x0``.

    With ``z = √ᾱ x0 + √(1−ᾱ) ε``: ``epsilon`` outputs ``ε``, ``sample`` outputs ``x0`` and
    ``v_prediction`` outputs ``v = √ᾱ ε − √(1−ᾱ) x0``.

    Args:
        output: The model output.
        latents: The noisy latents ``z`` the model saw.
        alpha: ``ᾱ`` of the timestep the model was told (``0 < ᾱ < 1``).
        prediction_type: ``epsilon``, ``sample`` or ``v_prediction``.

    Returns:
        ``(ε, x0)``.

    Raises:
        ValueError: For another prediction type.
    """
    a, b = math.sqrt(alpha), math.sqrt(1.0 - alpha)
    if prediction_type == "epsilon":
        return output, (latents - b * output) / a
    if prediction_type == "sample":
        return (latents - a * output) / b, output
    if prediction_type == "v_prediction":
        return a * output + b * latents, a * latents - b * output
    raise ValueError(
        f"unsupported prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}"
    )


class ProxEditPipeline(DiffusionPipeline):
    """ProxEdit: DDIM inversion, NPI guidance, proximal guidance (optionally mutual attention).

    Load it from a Stable-Diffusion-style text-to-image folder with
    ``ProxEditPipeline.from_pretrained(folder)``: the folder's scheduler is replaced by a DDIM
    scheduler with the same noise schedule (see :meth:`from_pretrained`), and components ProxEdit
    does not use (safety checker, feature extractor, image encoder) are ignored. Equivalently
    (for the SynthEgo folders, ``import lego.models.editing.autoencoder`` first)::

        sd = StableDiffusionPipeline.from_pretrained(folder)
        scheduler = DDIMScheduler.from_config(
            sd.scheduler.config, clip_sample=False, set_alpha_to_one=False
        )
        pipe = ProxEditPipeline(sd.vae, sd.text_encoder, sd.tokenizer, sd.unet, scheduler)

    Only the scheduler's noise levels, timesteps and ``prediction_type`` are used; its
    ``clip_sample`` / thresholding settings do not apply (the DDIM steps are computed here).

    Args:
        vae: The autoencoder (``AutoencoderKL`` or the miniature ``PixelUnshuffleAutoencoder``).
        text_encoder: The CLIP text encoder.
        tokenizer: Its tokenizer.
        unet: The text-to-image UNet.
        scheduler: A ``DDIMScheduler`` (its noise schedule and timesteps).

    Raises:
        ValueError: If ``scheduler`` is not a ``DDIMScheduler`` or predicts an unsupported type.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "mask", "source_latents"]

    def __init__(
        self,
        vae: AutoencoderKL | ModelMixin,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: DDIMScheduler,
    ) -> None:
        super().__init__()
        if not isinstance(scheduler, DDIMScheduler):
            raise ValueError(
                f"ProxEditPipeline needs a DDIMScheduler, got {type(scheduler).__name__}; use "
                "DDIMScheduler.from_config(scheduler.config, clip_sample=False, "
                "set_alpha_to_one=False)"
            )
        if scheduler.config.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unsupported prediction_type {scheduler.config.prediction_type!r}; expected one "
                f"of {PREDICTION_TYPES}"
            )
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> ProxEditPipeline:
        """Load the pipeline from a pipeline folder, e.g. a ``StableDiffusionPipeline`` one.

        Components whose library is a module of this package (the miniature's
        ``lego.models.editing.autoencoder``) are imported first: diffusers loads classes only from
        imported modules.

        If no ``scheduler`` is passed and the folder's scheduler is not a ``DDIMScheduler``, it is
        replaced by ``DDIMScheduler.from_config(config, clip_sample=False,
        set_alpha_to_one=False)`` (ProxEdit's settings) on the folder's scheduler config, which
        keeps its noise schedule, timestep spacing and ``prediction_type``. Other keyword
        arguments go to ``DiffusionPipeline.from_pretrained``.

        Args:
            pretrained_model_name_or_path: Folder or hub id.
            **kwargs: As ``DiffusionPipeline.from_pretrained``.

        Returns:
            The pipeline.
        """
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        index = cls.load_config(pretrained_model_name_or_path, **hub)
        for value in index.values():
            if isinstance(value, list | tuple) and value and str(value[0]).startswith("lego."):
                importlib.import_module(value[0])
        if kwargs.get("scheduler") is None:
            config = DDIMScheduler.load_config(
                pretrained_model_name_or_path, subfolder="scheduler", **hub
            )
            if config.get("_class_name") != DDIMScheduler.__name__:
                known = set(inspect.signature(DDIMScheduler.__init__).parameters)
                config = {k: v for k, v in config.items() if k in known or k.startswith("_")}
                kwargs["scheduler"] = DDIMScheduler.from_config(
                    config, clip_sample=False, set_alpha_to_one=False
                )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ----------------------------------------------------------------------------------------
    # Building blocks

    def _encode_prompt(self, prompts: list[str], device: torch.device) -> Tensor:
        """CLIP embeddings ``B x L x D`` of ``prompts`` (padded to the tokenizer's length)."""
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, device)

    def _alpha(self, timestep: int) -> float:
        """``ᾱ_t`` of a timestep; ``final_alpha_cumprod`` for a negative one (the clean level)."""
        if timestep < 0:
            return float(self.scheduler.final_alpha_cumprod)
        return float(self.scheduler.alphas_cumprod[timestep])

    def _levels(self, timesteps: Tensor) -> list[float]:
        """``ᾱ`` of trajectory index ``k`` (0: clean, ``k``: ``k``-th smallest timestep)."""
        ascending = sorted(int(t) for t in timesteps)
        return [self._alpha(-1)] + [self._alpha(t) for t in ascending]

    def _predict(self, latents: Tensor, timestep: Tensor, embeds: Tensor) -> tuple[Tensor, Tensor]:
        """Run the UNet and convert its output to ``(ε, x0)`` at the level of ``timestep``."""
        output = self.unet(
            latents.to(self.unet.dtype), timestep, encoder_hidden_states=embeds.to(self.unet.dtype)
        ).sample
        alpha = self._alpha(int(timestep))
        return split_prediction(
            output.float(), latents, alpha, self.scheduler.config.prediction_type
        )

    @staticmethod
    def _ddim(x0: Tensor, eps: Tensor, alpha: float) -> Tensor:
        """The deterministic DDIM latent at level ``alpha`` from ``x0`` and ``ε``."""
        return math.sqrt(alpha) * x0 + math.sqrt(1.0 - alpha) * eps

    # ----------------------------------------------------------------------------------------
    # Inversion

    @torch.no_grad()
    def invert(
        self, latents: Tensor, source_embeds: Tensor, num_inference_steps: int
    ) -> list[Tensor]:
        """Deterministic DDIM inversion with the source prompt's conditional embedding (no CFG).

        Along the scheduler's timesteps (``scheduler.set_timesteps(num_inference_steps)``) in
        increasing order ``t_1 < ... < t_N``, with ``ᾱ_0 = scheduler.final_alpha_cumprod`` the level
        of the clean latent: ``ε = ε(z_{k−1}, t_k, c_src)`` (evaluated at the target timestep from
        the current latent, as the official code does), ``x0 = (z_{k−1} − √(1−ᾱ_{k−1}) ε) /
        √ᾱ_{k−1}``, ``z_k = √ᾱ_k x0 + √(1−ᾱ_k) ε``.

        Args:
            latents: Clean scaled latents ``B x c x h x w``.
            source_embeds: Source prompt embeddings ``B x L x D`` (or ``1 x L x D``).
            num_inference_steps: Number of DDIM steps ``N``.

        Returns:
            The trajectory ``[z_0, z_1, ..., z_N]`` (``z_0`` the input, ``z_N`` the noisiest), in
            float32.

        Raises:
            ValueError: If ``num_inference_steps < 1`` or the batch sizes differ.
        """
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if source_embeds.shape[0] not in (1, latents.shape[0]):
            raise ValueError(
                f"{latents.shape[0]} latents but {source_embeds.shape[0]} source embeddings"
            )
        source_embeds = source_embeds.expand(latents.shape[0], -1, -1)
        self.scheduler.set_timesteps(num_inference_steps, device=latents.device)
        timesteps = self.scheduler.timesteps.flip(0)
        levels = self._levels(timesteps)
        z = latents.float()
        trajectory = [z]
        with self.progress_bar(total=len(timesteps)) as bar:
            for k, t in enumerate(timesteps, start=1):
                eps, _ = self._predict(z, t, source_embeds)
                x0 = (z - math.sqrt(1.0 - levels[k - 1]) * eps) / math.sqrt(levels[k - 1])
                z = self._ddim(x0, eps, levels[k])
                trajectory.append(z)
                bar.update()
        return trajectory

    # ----------------------------------------------------------------------------------------
    # Editing

    def _pixels(self, image: PipelineImageInput) -> Tensor:
        """Preprocess ``image`` to ``B x 3 x H x W`` in [-1, 1], checking its size."""
        images = image if isinstance(image, list) else [image]
        if not images:
            raise ValueError("image is empty")
        sizes = set()
        for item in images:
            if isinstance(item, PIL.Image.Image):
                sizes.add((item.height, item.width))
            elif isinstance(item, Tensor):
                sizes.add(tuple(item.shape[-2:]))
            else:  # numpy: H x W x C or B x H x W x C
                sizes.add(tuple(item.shape[-3:-1]) if item.ndim >= 3 else tuple(item.shape))
        if len(sizes) != 1:
            raise ValueError(f"images of different sizes: {sorted(sizes)}")
        height, width = sizes.pop()
        factor = self.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height} x {width} is not divisible by the vae scale factor {factor}"
            )
        return self.image_processor.preprocess(image, height=height, width=width)

    @staticmethod
    def _as_batch(prompt: str | list[str], batch: int, name: str) -> list[str]:
        """``prompt`` as a list of ``batch`` strings (a string is repeated)."""
        if isinstance(prompt, str):
            return [prompt] * batch
        prompts = list(prompt)
        if len(prompts) != batch or not all(isinstance(p, str) for p in prompts):
            raise ValueError(
                f"{name} must be a string or a list of {batch} strings (one per image)"
            )
        return prompts

    @staticmethod
    def _check_arguments(
        num_inference_steps: int,
        proximal: str | None,
        quantile: float,
        dilate_mask: int,
        mask_rule: str,
        mutual_start_step: int,
        mutual_start_layer: int,
        output_type: str,
    ) -> None:
        """Raise a ValueError for an invalid argument of ``__call__``."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if proximal is not None and proximal not in PROXIMAL_MODES:
            raise ValueError(f"proximal must be one of {PROXIMAL_MODES} or None, got {proximal!r}")
        if not quantile <= 1:
            raise ValueError(
                f"quantile must be at most 1 (or negative: a fixed threshold), got {quantile}"
            )
        if dilate_mask < 0:
            raise ValueError(f"dilate_mask must be >= 0, got {dilate_mask}")
        if mask_rule not in MASK_RULES:
            raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
        if mutual_start_step < 0 or mutual_start_layer < 0:
            raise ValueError(
                f"mutual_start_step and mutual_start_layer must be >= 0, got {mutual_start_step} "
                f"and {mutual_start_layer}"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        image: PipelineImageInput,
        source_prompt: str | list[str] = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        proximal: ProximalMode | None = "l0",
        quantile: float = 0.7,
        recon_t: int = 400,
        recon_lr: float = 1.0,
        dilate_mask: int = 1,
        mask_rule: MaskRule = "official",
        inversion_guidance: bool = True,
        reconstruction_guidance: bool = False,
        mutual_attention: bool = False,
        mutual_start_step: int = 4,
        mutual_start_layer: int = 10,
        output_type: Literal["pil", "np", "pt", "latent"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Edit ``image`` from ``source_prompt`` toward ``prompt``.

        Per denoising step ``i`` at timestep ``t`` (latent ``z`` at trajectory index
        ``k = N − i``): one batched UNet call on ``[uncond (c_src) | cond (c_tgt)]`` (with
        ``mutual_attention``, ``[source (c_src) | uncond (c_src) | cond (c_tgt)]``), ``Δ = ε_c −
        ε_u``, ``(Δ', mask) = proximal_guidance(Δ, quantile, proximal, dilate_mask, mask_rule)``,
        ``ε̂ = ε_u + w Δ'``, ``x0 = (z − √(1−ᾱ_t) ε̂) / √ᾱ_t``; when ``t < recon_t`` (or
        ``t > −recon_t`` for a negative ``recon_t``, as in the official code) and proximal guidance
        is on, reconstruction guidance sets ``x0 ← x0 − recon_lr (x0 − z_0)(1 − mask)``; then
        ``z ← √ᾱ_prev x0 + √(1−ᾱ_prev) ε̂`` and inversion guidance sets ``z ← z − recon_lr (z −
        z*_{k−1})(1 − mask)``. The mask, hence both guidances, exists only with proximal guidance
        (``proximal=None`` is plain NPI guidance), as in the official code.

        Args:
            prompt: Target prompt(s) (one per image, or one string for all).
            image: PIL image(s), or a ``B x 3 x H x W`` tensor in [0, 1]; ``H`` and ``W`` must be
                multiples of ``vae_scale_factor``.
            source_prompt: Source prompt(s) describing the input (default: the empty caption); it
                is the inversion prompt and the NPI "unconditional" prompt.
            num_inference_steps: DDIM steps (inversion and editing).
            guidance_scale: ``w``.
            proximal: ``"l0"``, ``"l1"``, ``"hard"`` (see :func:`proximal_guidance`) or None.
            quantile: Quantile of ``|Δ|`` per sample giving ``λ`` (``(0, 1]``), or minus a fixed
                threshold (``<= 0``). The official two-branch 0.7 is about 0.4 here (see
                :func:`proximal_threshold`).
            recon_t: Guidance toward the input acts at timesteps below ``recon_t``.
            recon_lr: Strength of reconstruction and inversion guidance (1: copy outside the mask).
            dilate_mask: Dilation radius of the edit mask.
            mask_rule: The edit mask: ``"official"`` ``1[|prox(Δ)| > λ]`` as ProxEdit's code
                (``|Δ| > 2λ`` for ``l0``) or ``"selected"`` ``1[|Δ| > λ]`` (see
                :func:`proximal_guidance`).
            inversion_guidance: Pull the latents toward the inversion trajectory outside the mask.
            reconstruction_guidance: Pull the predicted ``x0`` toward ``z_0`` outside the mask.
            mutual_attention: Run a source branch (CFG 1, ``c_src``, from ``z*_N``) whose keys and
                values the target's self-attention reads (ProxMasaCtrl).
            mutual_start_step: First denoising step (0-based) of mutual attention.
            mutual_start_layer: First self-attention layer (0-based, execution order) of it.
            output_type: ``pil``, ``np``, ``pt`` (decoded images in [0, 1]) or ``latent`` (the
                final scaled latents ``B x c x h x w``).
            return_dict: Return an ``ImagePipelineOutput`` rather than a tuple.
            callback_on_step_end: Called as ``callback(pipe, i, t, tensors)`` after each step;
                may return a dict with a replacement ``latents``.
            callback_on_step_end_tensor_inputs: Names from ``latents``, ``mask`` (None when there
                is no mask) and ``source_latents`` (None without mutual attention) to pass;
                default ``["latents"]``.

        Returns:
            ``ImagePipelineOutput(images=...)``, or ``(images,)``.

        Raises:
            ValueError: For an invalid argument, a prompt list whose length is not the number of
                images, or an image size not divisible by the vae scale factor.
        """
        self._check_arguments(
            num_inference_steps,
            proximal,
            quantile,
            dilate_mask,
            mask_rule,
            mutual_start_step,
            mutual_start_layer,
            output_type,
        )
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        unknown = set(tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"unknown callback tensor inputs {sorted(unknown)}; available: "
                f"{self._callback_tensor_inputs}"
            )
        device = self._execution_device
        pixels = self._pixels(image)
        batch = pixels.shape[0]
        targets = self._as_batch(prompt, batch, "prompt")
        sources = self._as_batch(source_prompt, batch, "source_prompt")
        c_tgt = self._encode_prompt(targets, device)
        c_src = self._encode_prompt(sources, device)
        encoded = self.vae.encode(pixels.to(device, self.vae.dtype)).latent_dist.mode()
        latent_0 = encoded.float() * self.vae.config.scaling_factor

        trajectory = self.invert(latent_0, c_src, num_inference_steps)
        timesteps = self.scheduler.timesteps
        levels = self._levels(timesteps)
        n = len(timesteps)

        state = MutualAttentionState(
            start_step=mutual_start_step,
            start_layer=mutual_start_layer,
            source_rows=batch if mutual_attention else 0,
        )
        self.mutual_attention_state = state  # for inspection after the call
        z = trajectory[-1]
        z_source = z
        if mutual_attention:
            embeds = torch.cat([c_src, c_src, c_tgt])
            control = mutual_self_attention(self.unet, state)
        else:
            embeds = torch.cat([c_src, c_tgt])
            control = nullcontext(state)
        with control, self.progress_bar(total=n) as bar:
            for i, t in enumerate(timesteps):
                k = n - i
                state.begin_forward(i)
                inputs = torch.cat([z_source, z, z] if mutual_attention else [z, z])
                eps_all, _ = self._predict(inputs, t, embeds)
                eps_source, eps_uncond, eps_cond = (
                    eps_all.chunk(3) if mutual_attention else (None, *eps_all.chunk(2))
                )
                delta = eps_cond - eps_uncond
                mask = None
                if proximal is not None:
                    delta, mask = proximal_guidance(
                        delta, quantile, proximal, dilate_mask, mask_rule
                    )
                eps = eps_uncond + guidance_scale * delta
                x0 = (z - math.sqrt(1.0 - levels[k]) * eps) / math.sqrt(levels[k])
                guided = mask is not None and (
                    (recon_t > 0 and int(t) < recon_t) or (recon_t < 0 and int(t) > -recon_t)
                )
                if guided and reconstruction_guidance:
                    x0 = x0 - recon_lr * (x0 - latent_0) * (1 - mask)
                z = self._ddim(x0, eps, levels[k - 1])
                if guided and inversion_guidance:
                    z = z - recon_lr * (z - trajectory[k - 1]) * (1 - mask)
                if eps_source is not None:
                    x0_source = (z_source - math.sqrt(1.0 - levels[k]) * eps_source) / math.sqrt(
                        levels[k]
                    )
                    z_source = self._ddim(x0_source, eps_source, levels[k - 1])
                if callback_on_step_end is not None:
                    available = {
                        "latents": z,
                        "mask": mask,
                        "source_latents": z_source if mutual_attention else None,
                    }
                    outputs = callback_on_step_end(
                        self, i, t, {name: available[name] for name in tensor_inputs}
                    )
                    z = (outputs or {}).get("latents", z)
                bar.update()

        if output_type == "latent":
            images: Any = z
        else:
            scaling = self.vae.config.scaling_factor
            decoded = self.vae.decode(z.to(self.vae.dtype) / scaling).sample
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
