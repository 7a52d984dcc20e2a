"""InstructPix2Pix fine-tuned on egocentric pairs: the trainable base of the diffusion family.

A latent diffusion UNet conditioned on the input frame (its unscaled latent concatenated on
channels) and on a cross-attention context (the CLIP text embedding; LEGO appends its projected
VLM tokens through :meth:`InstructPix2PixModule.condition_tokens`). Training follows the paper's
code (``method.md`` Part B 4); sampling is diffusers' InstructPix2Pix pipeline with three-way
classifier-free guidance (Part B 5).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections import OrderedDict
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import StableDiffusionInstructPix2PixPipeline
from diffusers.training_utils import EMAModel
from lightning.pytorch.utilities import grad_norm
from torch import Tensor
from torch.optim import Optimizer

from lego.batch import EgoBatch, GeneratedFrames
from lego.data.seeds import derive_seed
from lego.hub import INSTRUCT_PIX2PIX
from lego.models.editing.components import PredictionType
from lego.models.editing.conditioning import assemble_context, conditioning_dropout_masks
from lego.models.editing.diffusion import NO_SAFETY_CHECKER, DiffusionGenerator
from lego.models.editing.timesteps import TimestepSampling, check_timestep_sampling, draw_timesteps
from lego.models.seeding import step_randomness
from lego.pipelines.prompts import encode_prompts

log = logging.getLogger(__name__)

#: How error messages name the averaged networks.
_ROLE = {"UNet2DConditionModel": "UNet", "VLMConditioner": "VLM conditioner"}


class InstructPix2PixModule(DiffusionGenerator):
    """The paper's IP2P baseline and the trainable base of LEGO: text + input frame -> frame.

    Components are loaded in :meth:`configure_model` from a diffusers-layout directory or hub id:
    a text-to-image UNet (Stable Diffusion, whose ``conv_in`` is widened with zero channels for the
    input-frame latent, bias kept) or an image-conditioned one (InstructPix2Pix, loaded as is), a
    frozen autoencoder, a frozen CLIP text encoder and its tokenizer, and the noise schedule. The
    text is the DataModule's ``text_source``. It exports to a stock
    ``diffusers.StableDiffusionInstructPix2PixPipeline`` directory.

    Args:
        pretrained: Diffusers-layout directory or hub id (``timbrooks/instruct-pix2pix``, or a
            Stable Diffusion checkpoint whose ``conv_in`` is widened).
        prediction_type: What the UNet predicts: ``epsilon`` (the paper), ``sample`` or
            ``v_prediction``.
        conditioning_dropout: ``p`` of the classifier-free-guidance dropout: prompt (CLIP text and
            any extra tokens) dropped for ``r < 2p``, input latent for ``p <= r < 3p`` (0.05).
        timestep_sampling: Density of the training timesteps: ``uniform`` (the paper) or
            ``logit_normal`` (``t / T = sigmoid(N(mean, std))``; a positive mean favours the
            noisy end).
        timestep_logit_mean: Mean of the logit-normal density (0.0).
        timestep_logit_std: Standard deviation of the logit-normal density (1.0).
        learning_rate: AdamW learning rate (1e-4, constant).
        weight_decay: AdamW weight decay (0.01).
        lr_warmup_steps: Linear warm-up steps (0: constant, as the paper).
        ema_decay: Decay of the EMA of the trained weights (:meth:`ema_modules`) used for
            validation, sampling and export (0.9999, warm-up ``min(decay, (1 + n) / (10 + n))``,
            updated every micro-batch as the paper; a checkpoint written at the end of a batch
            holds that batch's update). ``None`` turns EMA off.
        gradient_checkpointing: Recompute UNet activations in the backward pass.
        text_cache_size: Keep the CLIP embeddings of up to this many prompts (the text encoder is
            frozen, so they never change; each is encoded on its own, so its value does not
            depend on the batch it first came in, nor on a resume); 0 turns the cache off.
        latent_cache_size: Keep the autoencoder's latent distributions of up to this many frames,
            keyed by frame content (encoded one frame at a time, as the prompts); 0 turns the
            cache off.
        sampler: Diffusers scheduler class used for sampling (``EulerAncestralDiscreteScheduler``
            as the paper, or e.g. ``DPMSolverMultistepScheduler``).
        sampler_options: Extra config values for the sampler.
        num_inference_steps: Sampling steps (100).
        text_guidance_scale: Guidance scale of the text (and any extra tokens) (7.5).
        image_guidance_scale: Guidance scale of the input frame (1.5).
        seed: Sampling seed; each sample's noise is seeded from ``(sample_id, seed)``. Training
            draws (latent sample, noise, timesteps, guidance dropout, the networks' dropout)
            come from ``(seed, global step, batch index, rank)``
            (:func:`~lego.models.seeding.step_randomness`) and validation draws from
            ``(seed, batch index)``: a run resumed from a checkpoint ends with the weights and
            EMA of the uninterrupted run.
        val_sample_batches: Validation batches for which frames are also sampled (for image grids).
    """

    trainable: ClassVar[bool] = True

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
        super().__init__(pretrained, sampler, sampler_options, num_inference_steps, seed)
        self.save_hyperparameters()
        if not 0.0 <= conditioning_dropout <= 1.0 / 3.0:
            raise ValueError(
                f"conditioning_dropout must be in [0, 1/3], got {conditioning_dropout}"
            )
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {ema_decay}")
        check_timestep_sampling(timestep_sampling, timestep_logit_std)
        self.prediction_type = prediction_type
        self.conditioning_dropout = conditioning_dropout
        self.timestep_sampling = timestep_sampling
        self.timestep_logit_mean = timestep_logit_mean
        self.timestep_logit_std = timestep_logit_std
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_warmup_steps = lr_warmup_steps
        self.ema_decay = ema_decay
        self.gradient_checkpointing = gradient_checkpointing
        self.text_cache_size = text_cache_size
        self.latent_cache_size = latent_cache_size
        self.text_guidance_scale = text_guidance_scale
        self.image_guidance_scale = image_guidance_scale
        self.val_sample_batches = val_sample_batches
        self.ema: EMAModel | None = None
        self._ema_swapped = False
        self._pending_ema_state: dict[str, Any] | None = None
        self._text_cache: OrderedDict[str, Tensor] = OrderedDict()
        self._null_embedding: Tensor | None = None
        self._latent_cache: OrderedDict[str, tuple[type, Tensor]] = OrderedDict()
        self._ema_due = False

    # ------------------------------------------------------------------------------- building
    def build(self) -> None:
        """Load the pretrained components, build any extra conditioning, then the EMA."""
        self.load_networks("image_conditioned", self.prediction_type)
        if self.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.build_conditioning()
        if self.ema_decay is not None:
            self.ema = EMAModel(self.ema_parameters(), decay=self.ema_decay, use_ema_warmup=False)
            if self._pending_ema_state is not None:
                self._load_ema(self._pending_ema_state)
                self._pending_ema_state = None

    def build_conditioning(self) -> None:
        """Build networks that condition the UNet beside the text (none; LEGO: the VLM's)."""

    def frozen_modules(self) -> list[torch.nn.Module]:
        """The autoencoder and the text encoder (always in eval mode)."""
        return [self.vae, self.text_encoder]

    # ------------------------------------------------------------------------------- checks
    def _check_batch(self, batch: EgoBatch, need_target: bool) -> None:
        def bad_samples(values: Tensor) -> list[str]:
            flat = values.detach().reshape(values.shape[0], -1)
            rows = (~torch.isfinite(flat).all(dim=1)).nonzero().flatten().tolist()
            return [batch.sample_ids[i] for i in rows]

        frames = {"input frame": batch.input_frames}
        if need_target:
            if batch.target_frames is None:
                raise ValueError(
                    f"training needs target frames; batch with samples {batch.sample_ids[:4]} "
                    "has none"
                )
            frames["target frame"] = batch.target_frames
        for name, values in frames.items():
            bad = bad_samples(values)
            if bad:
                raise ValueError(f"NaN or inf in the {name} of sample(s) {bad}")
        self.check_conditioning(batch)

    def check_conditioning(self, batch: EgoBatch) -> None:
        """Check the batch's extra conditioning inputs (none; LEGO: the VLM features)."""

    # ------------------------------------------------------------------------------- encoders
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        """CLIP-encode prompts (``B x 77 x C``), through the prompt cache if enabled.

        Args:
            texts: The prompts.

        Returns:
            The final-layer hidden states of the text encoder.
        """
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        computed: dict[str, Tensor] = {}
        if missing:
            encode = partial(encode_prompts, self.tokenizer, self.text_encoder,
                             device=self.device)
            if self.text_cache_size > 0:  # one at a time: a cached value is batch-independent
                hidden = torch.cat([encode([text]) for text in missing])
            else:
                hidden = encode(missing)
            computed = dict(zip(missing, hidden, strict=True))
        if self.text_cache_size > 0:
            for text, value in computed.items():
                self._text_cache[text] = value
            while len(self._text_cache) > self.text_cache_size:
                self._text_cache.popitem(last=False)
        rows = []
        for text in texts:
            if text in computed:
                rows.append(computed[text])
            else:
                self._text_cache.move_to_end(text)
                rows.append(self._text_cache[text].to(self.device))
        return torch.stack(rows)

    def null_text(self, batch_size: int) -> Tensor:
        """CLIP embedding of the empty prompt (computed once), repeated ``batch_size`` times."""
        null = self._null_embedding
        if null is None or null.device != self.device:
            null = self._null_embedding = self.encode_text([""])
        return null.expand(batch_size, -1, -1)

    @torch.no_grad()
    def _latent_dist(self, frames: Tensor) -> Any:
        if self.latent_cache_size <= 0:
            return self.vae.encode(frames).latent_dist
        keys = [
            hashlib.blake2b(f.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest()
            for f in frames
        ]
        missing = [i for i, k in enumerate(keys) if k not in self._latent_cache]
        for i in missing:  # one at a time: a cached value is batch-independent
            dist = self.vae.encode(frames[i : i + 1]).latent_dist
            self._latent_cache[keys[i]] = (type(dist), dist.parameters)
        while len(self._latent_cache) > self.latent_cache_size:
            self._latent_cache.popitem(last=False)
        entries = [self._latent_cache.get(k) for k in keys]
        if any(e is None for e in entries):  # cache smaller than the batch: encode directly
            return self.vae.encode(frames).latent_dist
        cls = entries[0][0]  # type: ignore[index]
        return cls(torch.cat([e[1] for e in entries]))  # type: ignore[index]

    def encode_input_latents(self, frames: Tensor) -> Tensor:
        """Unscaled mode latents of the input frames (the image condition)."""
        return self._latent_dist(frames.to(self.device, self.vae.dtype)).mode()

    def encode_target_latents(
        self, frames: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Sampled latents of the target frames times the scaling factor (the diffusion data).

        Args:
            frames: Target frames in [-1, 1].
            generator: Generator of the latent sample (``None``: the global random state).
        """
        dist = self._latent_dist(frames.to(self.device, self.vae.dtype))
        return dist.sample(generator=generator) * self.vae.config.scaling_factor

    def condition_tokens(self, batch: EgoBatch) -> Tensor | None:
        """Tokens appended to the CLIP text in the context (``None``; LEGO: the VLM's)."""
        return None

    # ------------------------------------------------------------------------------- training
    def diffusion_loss(self, batch: EgoBatch, generator: torch.Generator | None = None) -> Tensor:
        """The denoising loss of a batch, with classifier-free-guidance dropout.

        Args:
            batch: A batch with target frames.
            generator: Generator of every draw, in this order: the target latents' sample, the
                noise, the timesteps, the dropout (``None``: the global random state).

        Returns:
            The mean squared error of the UNet's prediction.
        """
        self._check_batch(batch, need_target=True)
        assert batch.target_frames is not None
        target_latents = self.encode_target_latents(batch.target_frames, generator)
        image_latents = self.encode_input_latents(batch.input_frames)
        size = target_latents.shape[0]
        where = generator.device if generator is not None else target_latents.device
        noise = torch.randn(
            target_latents.shape, generator=generator, device=where, dtype=target_latents.dtype
        ).to(target_latents.device)
        timesteps = draw_timesteps(
            self.timestep_sampling,
            size,
            self.noise_scheduler.config.num_train_timesteps,
            self.device,
            logit_mean=self.timestep_logit_mean,
            logit_std=self.timestep_logit_std,
            generator=generator,
        )
        noisy = self.noise_scheduler.add_noise(target_latents, noise, timesteps)
        drop_prompt, drop_image = conditioning_dropout_masks(
            size,
            self.conditioning_dropout,
            device=generator.device if generator is not None else "cpu",
            generator=generator,
        )
        drop_prompt, drop_image = drop_prompt.to(self.device), drop_image.to(self.device)
        clip = self.encode_text(list(batch.texts))
        clip = torch.where(drop_prompt[:, None, None], self.null_text(size), clip)
        tokens = self.condition_tokens(batch)
        if tokens is not None:
            tokens = tokens * (~drop_prompt)[:, None, None].to(tokens.dtype)
        context = assemble_context(clip, tokens)
        image_latents = image_latents * (~drop_image)[:, None, None, None].to(image_latents.dtype)
        model_in = torch.cat([noisy, image_latents], dim=1)
        pred = self.unet(model_in, timesteps, encoder_hidden_states=context, return_dict=False)[0]
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "sample":
            target = target_latents
        else:
            target = self.noise_scheduler.get_velocity(target_latents, noise, timesteps)
        return F.mse_loss(pred.float(), target.float())

    def training_step(self, batch: EgoBatch, batch_idx: int) -> Tensor:
        """One denoising step; a non-finite loss stops training with the sample ids.

        Every draw is counter-based (:func:`~lego.models.seeding.step_randomness`).
        """
        with step_randomness(
            self.seed, self.global_step, batch_idx, self.global_rank, self.device
        ) as generator:
            loss = self.diffusion_loss(batch, generator=generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step} on samples "
                f"{batch.sample_ids}; lower the learning rate or check the data"
            )
        self._ema_due = self.ema is not None
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the EMA of the UNet (every micro-batch, as the paper's code)."""
        self._step_ema()

    def _step_ema(self) -> None:
        """The EMA update of the batch just trained, once (also called by a checkpoint save)."""
        if self.ema is not None and self._ema_due:
            self.ema.step(self.ema_parameters())
        self._ema_due = False

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Log the total gradient norm of the trainable weights."""
        every = max(1, getattr(self.trainer, "log_every_n_steps", 50))
        if self.global_step % every == 0:
            norms = grad_norm(self, norm_type=2)
            if "grad_2.0_norm_total" in norms:
                self.log("train/grad_norm", norms["grad_2.0_norm_total"])

    def validation_step(self, batch: EgoBatch, batch_idx: int) -> GeneratedFrames | None:
        """Validation loss (same dropout as training) and, for the first batches, sampled frames.

        Returns:
            Generated frames for the first ``val_sample_batches`` batches (image grids consume
            them), else ``None``.
        """
        generator = torch.Generator(self.device).manual_seed(
            derive_seed(self.seed, "validation", batch_idx)
        )
        loss = self.diffusion_loss(batch, generator=generator)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)
        if batch_idx < self.val_sample_batches:
            return self._outputs(batch)
        return None

    def configure_optimizers(self) -> Any:
        """AdamW over the trainable weights only (the UNet, and what a subclass trains)."""
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        if self.lr_warmup_steps <= 0:
            return optimizer
        warmup = self.lr_warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------------------- EMA
    def ema_modules(self) -> list[torch.nn.Module]:
        """The modules whose weights the EMA averages (the UNet; LEGO adds its conditioner)."""
        return [self.unet]

    def ema_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters of :meth:`ema_modules`, in a fixed order."""
        return [p for module in self.ema_modules() for p in module.parameters()]

    def _load_ema(self, state: dict[str, Any]) -> None:
        assert self.ema is not None
        count = len(self.ema_parameters())
        if len(state.get("shadow_params", [])) != count:
            raise ValueError(
                f"the checkpoint's EMA holds {len(state.get('shadow_params', []))} tensors but "
                f"{type(self).__name__} averages {count} ("
                + " and ".join(_ROLE.get(type(m).__name__, type(m).__name__)
                               for m in self.ema_modules())
                + "); it was saved by another model or version"
            )
        self.ema.load_state_dict(state)

    def _swap_in_ema(self) -> None:
        if self.ema is not None and not self._ema_swapped:
            self.ema.to(self.device)
            self.ema.store(self.ema_parameters())
            self.ema.copy_to(self.ema_parameters())
            self._ema_swapped = True

    def _swap_out_ema(self) -> None:
        if self.ema is not None and self._ema_swapped:
            self.ema.restore(self.ema_parameters())
            self._ema_swapped = False

    def on_fit_start(self) -> None:
        """Move the EMA weights to the training device."""
        if self.ema is not None:
            self.ema.to(self.device)

    def on_validation_epoch_start(self) -> None:
        """Validate with the EMA weights."""
        self._swap_in_ema()

    def on_validation_epoch_end(self) -> None:
        """Return to the training weights."""
        self._swap_out_ema()

    def on_test_epoch_start(self) -> None:
        """Sample with the EMA weights."""
        self._swap_in_ema()

    def on_test_epoch_end(self) -> None:
        """Return to the training weights."""
        self._swap_out_ema()

    def on_predict_epoch_start(self) -> None:
        """Sample with the EMA weights."""
        self._swap_in_ema()

    def on_predict_epoch_end(self) -> None:
        """Return to the training weights."""
        self._swap_out_ema()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the EMA weights next to the model's state.

        A checkpoint written at the end of a batch (``ModelCheckpoint(every_n_train_steps)``,
        whose hook runs before the module's) first applies that batch's EMA update, so the
        checkpoint is the state after the batch, from which a resumed run goes on.
        """
        if self.ema is not None:
            self._step_ema()
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the EMA weights (now, or once the model is built).

        Raises:
            ValueError: If the checkpoint's EMA does not cover the same weights.
        """
        state = checkpoint.get("ema")
        if state is None:
            return
        if self.ema is not None:
            self._load_ema(state)
        else:
            self._pending_ema_state = state

    def sampling_modules(self) -> tuple[Any, Any]:
        """Copies of the UNet and of the extra conditioner (``None`` here) used for sampling.

        These hold the EMA weights when the EMA is enabled.
        """
        copies = [copy.deepcopy(m) for m in self.ema_modules()]
        if self.ema is not None and not self._ema_swapped:
            self.ema.to(self.device)
            self.ema.copy_to([p for module in copies for p in module.parameters()])
        return copies[0], copies[1] if len(copies) > 1 else None

    # ------------------------------------------------------------------------------- sampling
    def pipeline(self) -> StableDiffusionInstructPix2PixPipeline:
        """The stock diffusers InstructPix2Pix pipeline on the module's live networks.

        During validation, test and predict the live UNet (and VLM conditioner) hold the EMA
        weights. The module feeds it the assembled context (CLIP text, plus LEGO's VLM tokens)
        as ``prompt_embeds``: the three-way guidance and the sampling loop are diffusers'.

        Returns:
            The pipeline with a fresh sampler; its progress bar is off (Lightning shows its own).
        """
        return self.live_pipeline(StableDiffusionInstructPix2PixPipeline, **NO_SAFETY_CHECKER)

    @torch.no_grad()
    def generate(self, batch: EgoBatch) -> Tensor:
        """Sample one action frame per input with three-way classifier-free guidance.

        Guidance follows diffusers' pipeline: it applies when the text scale is above 1 and the
        image scale at least 1 (otherwise the conditional prediction alone is used).

        Args:
            batch: A batch (target frames not needed).

        Returns:
            ``B x 3 x H x W`` frames, ``(x + 1) / 2`` of the decoder output, not clamped.
        """
        self._check_batch(batch, need_target=False)
        size = len(batch)
        clip = self.encode_text(list(batch.texts))
        tokens = self.condition_tokens(batch)
        context = assemble_context(clip, tokens)
        null_context = assemble_context(
            self.null_text(size), torch.zeros_like(tokens) if tokens is not None else None
        )
        latents = self.pipeline()(
            image=self.input_images(batch).to(self.device),
            prompt_embeds=context.to(self.unet.dtype),
            negative_prompt_embeds=null_context.to(self.unet.dtype),
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.text_guidance_scale,
            image_guidance_scale=self.image_guidance_scale,
            generator=self.generators(batch),
            output_type="latent",
        ).images
        return self.decode(self.vae, latents)
