"""Base of the latent diffusion generators: pretrained parts built once, sampling options, seeds."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, TypeVar

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor, nn

from lego.batch import EgoBatch
from lego.models.editing.base import ActionFrameGenerator
from lego.models.editing.components import (
    UnetKind,
    check_sampler,
    load_components,
    make_sampling_scheduler,
)
from lego.models.editing.guidance import sample_generators

PipelineT = TypeVar("PipelineT")
#: Arguments that switch off the stock Stable Diffusion pipelines' safety checker.
NO_SAFETY_CHECKER: dict[str, Any] = {
    "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
}


class DiffusionGenerator(ActionFrameGenerator):
    """What every diffusion method shares (IP2P and LEGO train; SDEdit and ProxEdit do not).

    The networks come from a diffusers-layout folder or hub id (``pretrained``) and are built once,
    in :meth:`configure_model`, never at import or construction; the frozen ones stay in eval
    mode whatever ``train()`` is called with. Sampling uses a fresh diffusers scheduler of class
    ``sampler`` per call, and one generator per sample seeded from ``(sample_id, seed)``, so a
    frame does not depend on its batch.

    Args:
        pretrained: Diffusers-layout directory or hub id.
        sampler: Diffusers scheduler class used for sampling.
        sampler_options: Extra config values for the sampler.
        num_inference_steps: Sampling steps.
        seed: Sampling seed.
    """

    def __init__(
        self,
        pretrained: str,
        sampler: str,
        sampler_options: dict[str, Any] | None,
        num_inference_steps: int,
        seed: int,
    ) -> None:
        super().__init__()
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        self.pretrained = pretrained
        self.sampler = sampler
        self.sampler_options = dict(sampler_options or {})
        self.num_inference_steps = num_inference_steps
        self.seed = seed
        self._built = False

    # ------------------------------------------------------------------------------- building
    @abstractmethod
    def build(self) -> None:
        """Load the networks from :attr:`pretrained` and set them as attributes (called once)."""

    def load_networks(self, unet: UnetKind, prediction_type: str | None = None) -> None:
        """Load the pretrained parts and check that :attr:`sampler` can sample them.

        They become the ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and
        ``noise_scheduler`` attributes.

        Args:
            unet: ``image_conditioned`` (8 input channels) or ``text_to_image``.
            prediction_type: Overrides the checkpoint's (``None`` keeps it).
        """
        parts = load_components(self.pretrained, prediction_type, unet=unet)
        check_sampler(self.sampler, parts.noise_scheduler.config, self.sampler_options)
        self.unet = parts.unet
        self.vae = parts.vae
        self.text_encoder = parts.text_encoder
        self.tokenizer = parts.tokenizer
        self.noise_scheduler = parts.noise_scheduler

    def frozen_modules(self) -> list[nn.Module]:
        """The networks that never train (kept in eval mode); all of them by default."""
        return [m for m in self.children() if isinstance(m, nn.Module)]

    def configure_model(self) -> None:
        """Build the networks once (Lightning calls this before every stage)."""
        if self._built:
            return
        self.build()
        self._built = True

    def train(self, mode: bool = True) -> DiffusionGenerator:
        """Set train/eval mode; the frozen networks always stay in eval."""
        super().train(mode)
        if self._built:
            for module in self.frozen_modules():
                module.eval()
        return self

    # ------------------------------------------------------------------------------- sampling
    def sampling_scheduler(self, config: Any) -> SchedulerMixin:
        """A fresh sampler (class :attr:`sampler`) on the model's training noise schedule.

        Args:
            config: The training scheduler's config (betas, T, prediction type).

        Returns:
            The scheduler, with the paper's linspace spacing unless the options say otherwise.
        """
        return make_sampling_scheduler(self.sampler, config, self.sampler_options)

    def live_pipeline(self, cls: type[PipelineT], **extra: Any) -> PipelineT:
        """A diffusers pipeline of class ``cls`` on the module's live networks.

        During validation, test and predict the live networks hold the EMA weights of a
        trainable method. The pipeline gets a fresh sampler (:meth:`sampling_scheduler`) and its
        progress bar is off (Lightning shows its own).

        Args:
            cls: The pipeline class.
            extra: More constructor arguments (e.g. :data:`NO_SAFETY_CHECKER`).

        Returns:
            The pipeline.
        """
        pipe = cls(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.sampling_scheduler(self.noise_scheduler.config),
            **extra,
        )
        pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
        return pipe

    def generators(self, batch: EgoBatch) -> list[torch.Generator]:
        """One generator per sample, seeded from ``(sample_id, seed)``."""
        return sample_generators(batch.sample_ids, self.seed, self.device)

    @staticmethod
    def input_images(batch: EgoBatch) -> Tensor:
        """The input frames on diffusers' image scale, ``[0, 1]``."""
        return (batch.input_frames.float() + 1.0) / 2.0

    def decode(self, vae: nn.Module, latents: Tensor) -> Tensor:
        """Decode scaled latents to frames on the [0, 1] scale, not clamped (``(x + 1) / 2``).

        Args:
            vae: The autoencoder (``decode`` and ``config.scaling_factor``).
            latents: Latents scaled like the diffusion data.

        Returns:
            ``B x 3 x H x W`` frames (raw: the official protocol stretches them).
        """
        scaled = latents.to(next(vae.parameters(), latents).dtype) / vae.config.scaling_factor
        return (vae.decode(scaled).sample.float() + 1.0) / 2.0
