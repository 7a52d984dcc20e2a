"""A lossless pixel-unshuffle autoencoder with the interface of diffusers' ``AutoencoderKL``.

The miniature SynthEgo stack uses it in place of Stable Diffusion's VAE: ``encode`` folds each
``f x f`` pixel block into channels (``3 x H x W`` -> ``3 f^2 x H/f x W/f``), ``decode`` unfolds
it. It has no weights, costs nothing, and is exact, yet it is loaded, saved and called exactly like
the VAE (``from_pretrained``, ``encode(x).latent_dist.mode()/.sample()``, ``decode(z).sample``,
``config.scaling_factor``), so the diffusion code has a single path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, IdentityDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor


class PixelUnshuffleAutoencoder(ModelMixin, ConfigMixin):
    """Fixed ``pixel_unshuffle`` encoder / ``pixel_shuffle`` decoder behind the VAE interface.

    Args:
        in_channels: Image channels.
        downscale_factor: Side of the pixel block folded into channels (a power of two).
        scaling_factor: Multiplier applied to latents before diffusion (the VAE's 0.18215).
        block_out_channels: Kept only so that pipelines deriving the spatial scale from
            ``2 ** (len(block_out_channels) - 1)`` (as diffusers' Stable Diffusion pipelines do)
            find ``downscale_factor``. Default: derived from ``downscale_factor``.
        latent_channels: Channels of the latents, ``in_channels * downscale_factor ** 2`` (derived
            when omitted; pipelines read it from the config).

    Raises:
        ValueError: If ``downscale_factor`` is not a power of two or disagrees with
            ``block_out_channels``.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        downscale_factor: int = 4,
        scaling_factor: float = 1.0,
        block_out_channels: tuple[int, ...] | None = None,
        latent_channels: int | None = None,
    ) -> None:
        super().__init__()
        if downscale_factor < 1 or downscale_factor & (downscale_factor - 1):
            raise ValueError(f"downscale_factor must be a power of two, got {downscale_factor}")
        levels = downscale_factor.bit_length()  # 2 ** (levels - 1) == downscale_factor
        if block_out_channels is None:
            self.register_to_config(block_out_channels=(in_channels,) * levels)
        elif 2 ** (len(block_out_channels) - 1) != downscale_factor:
            raise ValueError(
                f"block_out_channels has {len(block_out_channels)} entries (a scale of "
                f"{2 ** (len(block_out_channels) - 1)}), but downscale_factor is {downscale_factor}"
            )
        expected = in_channels * downscale_factor**2
        if latent_channels is not None and latent_channels != expected:
            raise ValueError(
                f"latent_channels must be in_channels * downscale_factor ** 2 = {expected}, "
                f"got {latent_channels}"
            )
        self.register_to_config(latent_channels=expected)
        # A constant buffer gives the module a device, a dtype and a weights file like any model.
        self.register_buffer("anchor", torch.zeros(1))

    def encode(self, x: Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Fold pixel blocks into channels.

        Args:
            x: Images ``B x C x H x W`` (H and W divisible by ``downscale_factor``).
            return_dict: Return an ``AutoencoderKLOutput`` rather than a tuple.

        Returns:
            The (deterministic) latent distribution, ``B x C f^2 x H/f x W/f``.

        Raises:
            ValueError: If the image has the wrong number of channels or an indivisible size.
        """
        factor = self.config.downscale_factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected images B x {self.config.in_channels} x H x W, got {tuple(x.shape)}"
            )
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} is not divisible by downscale_factor {factor}"
            )
        dist = IdentityDistribution(F.pixel_unshuffle(x, factor))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(
        self, z: Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple:
        """Unfold channels back into pixel blocks.

        Args:
            z: Latents ``B x C f^2 x h x w``.
            return_dict: Return a ``DecoderOutput`` rather than a tuple.
            generator: Unused (the decoder is deterministic); accepted for interface parity.

        Returns:
            Images ``B x C x h f x w f``.
        """
        image = F.pixel_shuffle(z, self.config.downscale_factor)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, sample: Tensor) -> Tensor:
        """Encode then decode (the identity up to float error).

        Args:
            sample: Images ``B x C x H x W``.

        Returns:
            The reconstruction.
        """
        return self.decode(self.encode(sample).latent_dist.mode()).sample
