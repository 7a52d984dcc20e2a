"""Builders of the diffusion components: UNet (with conv_in surgery), autoencoder, text, schedulers.

Every network is loaded with ``from_pretrained`` from a diffusers-layout directory or hub id
(``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), so Stable Diffusion,
InstructPix2Pix and the miniature SynthEgo backbones all take the same path. Pure torch /
diffusers / transformers: no Lightning here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import diffusers
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from lego.errors import UserError
from lego.models.editing import autoencoder as _autoencoder_module

#: The paper's spacing of the sampling steps (see :func:`make_sampling_scheduler`).
#: Which UNet :func:`load_components` returns: 8 input channels (IP2P, LEGO) or 4 (SD).
UnetKind = Literal["image_conditioned", "text_to_image"]
SAMPLING_SPACING: dict[str, Any] = {"timestep_spacing": "linspace"}

#: What the UNet is trained to predict.
PredictionType = Literal["epsilon", "sample", "v_prediction"]


class ComponentLoadError(UserError, RuntimeError):
    """A pretrained component is missing, unreadable or of the wrong architecture.

    The message names the directory (or hub id) and subfolder.
    """


def _where(pretrained: str | Path, subfolder: str) -> str:
    return f"{pretrained}/{subfolder}" if subfolder else str(pretrained)


def grow_conv_in(unet: UNet2DConditionModel, in_channels: int) -> UNet2DConditionModel:
    """Widen the UNet's first convolution to ``in_channels`` inputs (InstructPix2Pix surgery).

    The pretrained weights fill the first input channels and the **bias is kept**; the new
    channels start at zero, so the widened UNet computes exactly what the original did until
    training moves them. A UNet that already has ``in_channels`` inputs is returned unchanged.

    Args:
        unet: A UNet (e.g. Stable Diffusion's, 4 input channels).
        in_channels: The wanted number of input channels (e.g. 8).

    Returns:
        The same UNet object, with a new ``conv_in`` and an updated config.

    Raises:
        ValueError: If the UNet already has more input channels than asked for.
    """
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    if old.in_channels > in_channels:
        raise ValueError(
            f"cannot shrink conv_in from {old.in_channels} to {in_channels} input channels"
        )
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        if old.bias is not None and new.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def _read_unet(pretrained: str | Path, latent_channels: int) -> UNet2DConditionModel:
    where = _where(pretrained, "unet")
    try:
        unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet")
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise ComponentLoadError(f"{where}: cannot load a UNet2DConditionModel ({err})") from err
    cfg = unet.config
    if cfg.out_channels != latent_channels or cfg.in_channels not in (
        latent_channels,
        2 * latent_channels,
    ):
        raise ComponentLoadError(
            f"{where}: UNet has in_channels={cfg.in_channels}, out_channels={cfg.out_channels}; "
            f"the autoencoder has {latent_channels} latent channels, so expected out_channels="
            f"{latent_channels} and in_channels {latent_channels} (text-to-image) or "
            f"{2 * latent_channels} (image-conditioned). Wrong checkpoint?"
        )
    return unet


def load_image_conditioned_unet(
    pretrained: str | Path, latent_channels: int
) -> UNet2DConditionModel:
    """Load ``<pretrained>/unet`` as an image-conditioned (2 x latent channel) UNet.

    A text-to-image UNet (``latent_channels`` inputs, Stable Diffusion) is widened with
    :func:`grow_conv_in`; an image-conditioned one (``2 * latent_channels``, InstructPix2Pix)
    loads as is. IP2P and LEGO train from it.

    Args:
        pretrained: Diffusers-layout directory or hub id.
        latent_channels: Channels of the autoencoder's latents.

    Returns:
        The UNet with ``2 * latent_channels`` input and ``latent_channels`` output channels.

    Raises:
        ComponentLoadError: If the UNet cannot be loaded or its channels fit neither layout.
    """
    return grow_conv_in(_read_unet(pretrained, latent_channels), 2 * latent_channels)


def load_text_to_image_unet(pretrained: str | Path, latent_channels: int) -> UNet2DConditionModel:
    """Load ``<pretrained>/unet`` as a text-to-image UNet (``latent_channels`` in and out).

    The training-free editors (SDEdit, ProxEdit) sample with Stable Diffusion's own UNet; an
    image-conditioned (InstructPix2Pix) UNet is refused, since it cannot run without an input
    latent on its extra channels.

    Args:
        pretrained: Diffusers-layout directory or hub id.
        latent_channels: Channels of the autoencoder's latents.

    Returns:
        The frozen UNet, in eval mode.

    Raises:
        ComponentLoadError: If the UNet cannot be loaded or is image-conditioned.
    """
    unet = _read_unet(pretrained, latent_channels)
    if unet.config.in_channels != latent_channels:
        raise ComponentLoadError(
            f"{_where(pretrained, 'unet')}: UNet has in_channels={unet.config.in_channels}, an "
            f"image-conditioned (InstructPix2Pix) model; SDEdit and ProxEdit need a text-to-image "
            f"model with in_channels={latent_channels} (e.g. Stable Diffusion 1.5)"
        )
    unet.requires_grad_(False)
    return unet.eval()


def autoencoder_class(name: str) -> type[ModelMixin]:
    """Resolve an autoencoder class name from a config (diffusers' or lego's).

    Args:
        name: The ``_class_name`` of ``vae/config.json``.

    Returns:
        The class.

    Raises:
        ComponentLoadError: If no diffusers or lego model class has that name.
    """
    cls = getattr(diffusers, name, None) or getattr(_autoencoder_module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ModelMixin)):
        raise ComponentLoadError(f"unknown autoencoder class {name!r}")
    return cls


def load_autoencoder(pretrained: str | Path) -> ModelMixin:
    """Load ``<pretrained>/vae``: an ``AutoencoderKL`` or any model with the same interface.

    The class is read from the config's ``_class_name`` (e.g. ``PixelUnshuffleAutoencoder`` for
    the SynthEgo miniature). The autoencoder is returned frozen and in eval mode.

    Args:
        pretrained: Diffusers-layout directory or hub id.

    Returns:
        The frozen autoencoder.

    Raises:
        ComponentLoadError: If it cannot be loaded or lacks ``encode``/``decode``/scaling factor.
    """
    where = _where(pretrained, "vae")
    try:
        config = diffusers.AutoencoderKL.load_config(pretrained, subfolder="vae")
        cls = autoencoder_class(str(config.get("_class_name", "AutoencoderKL")))
        vae = cls.from_pretrained(pretrained, subfolder="vae")
    except ComponentLoadError as err:
        raise ComponentLoadError(f"{where}: {err}") from err
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise ComponentLoadError(f"{where}: cannot load the autoencoder ({err})") from err
    for attr in ("encode", "decode"):
        if not callable(getattr(vae, attr, None)):
            raise ComponentLoadError(f"{where}: {type(vae).__name__} has no {attr}()")
    if "scaling_factor" not in vae.config or "latent_channels" not in vae.config:
        raise ComponentLoadError(
            f"{where}: autoencoder config needs scaling_factor and latent_channels"
        )
    vae.requires_grad_(False)
    return vae.eval()


def load_text_encoder(pretrained: str | Path) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """Load the frozen CLIP text encoder (``text_encoder/``) and its tokenizer (``tokenizer/``).

    Args:
        pretrained: Diffusers-layout directory or hub id.

    Returns:
        ``(text_encoder, tokenizer)``; the encoder is frozen and in eval mode.

    Raises:
        ComponentLoadError: If either cannot be loaded.
    """
    try:
        encoder = CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder")
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise ComponentLoadError(
            f"{_where(pretrained, 'text_encoder')}: cannot load a CLIPTextModel ({err})"
        ) from err
    try:
        tokenizer = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer")
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise ComponentLoadError(
            f"{_where(pretrained, 'tokenizer')}: cannot load a CLIPTokenizer ({err})"
        ) from err
    encoder.requires_grad_(False)
    return encoder.eval(), tokenizer


def load_noise_scheduler(
    pretrained: str | Path, prediction_type: PredictionType | None
) -> DDPMScheduler:
    """Load the training noise schedule from ``scheduler/`` as a ``DDPMScheduler``.

    Args:
        pretrained: Diffusers-layout directory or hub id.
        prediction_type: ``epsilon``, ``sample`` or ``v_prediction``; ``None`` keeps the one the
            config states (a pretrained model sampled as it was trained).

    Returns:
        The scheduler (betas, T and the prediction type used by training and sampling).

    Raises:
        ComponentLoadError: If the scheduler config cannot be read.
    """
    try:
        config = DDPMScheduler.load_config(pretrained, subfolder="scheduler")
    except (OSError, ValueError) as err:
        raise ComponentLoadError(
            f"{_where(pretrained, 'scheduler')}: cannot load the scheduler config ({err})"
        ) from err
    if prediction_type is None:
        return DDPMScheduler.from_config(config)
    return DDPMScheduler.from_config(config, prediction_type=prediction_type)


def make_sampling_scheduler(
    name: str, config: Any, options: dict[str, Any] | None = None
) -> SchedulerMixin:
    """Build a fresh sampling scheduler of diffusers class ``name`` from a training schedule.

    The steps are spaced as the paper samples (``timestep_spacing: linspace``, the first step at
    ``t = T - 1``: SD 1.5's hub config with Euler-ancestral), whatever spacing the checkpoint's
    scheduler config stores (a locally saved ``DDPMScheduler`` says ``leading``: ``t = 991`` at
    100 steps); ``options`` may still set another.

    Args:
        name: A diffusers scheduler class name, e.g. ``EulerAncestralDiscreteScheduler`` or
            ``DPMSolverMultistepScheduler``.
        config: The training scheduler's config (betas, T, prediction type).
        options: Extra config values for that scheduler, e.g.
            ``{"algorithm_type": "dpmsolver++"}``.

    Returns:
        A new scheduler (schedulers are stateful: build one per sampling run).

    Raises:
        ValueError: If ``name`` is not a diffusers scheduler.
    """
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{name!r} is not a diffusers scheduler class")
    return cls.from_config(config, **{**SAMPLING_SPACING, **(options or {})})


def check_sampler(name: str, config: Any, options: dict[str, Any] | None = None) -> None:
    """Fail early if a sampler cannot be built or cannot step with the model's prediction type.

    Args:
        name: The diffusers scheduler class name.
        config: The training scheduler's config (carries ``prediction_type``).
        options: Extra config values for the sampler.

    Raises:
        ValueError: If the class is unknown or does not support the prediction type (e.g.
            ``EulerAncestralDiscreteScheduler`` with ``sample``).
    """
    # On the CPU whatever the default device: Lightning builds models under the accelerator's
    # device context, and some schedulers convert their timesteps to numpy.
    with torch.device("cpu"):
        scheduler = make_sampling_scheduler(name, config, options)
        scheduler.set_timesteps(2)
        sample = torch.zeros(1, 1, 2, 2)
        try:
            scheduler.step(sample, scheduler.timesteps[0], sample)
        except NotImplementedError as err:
            raise ValueError(
                f"sampler {name} cannot sample a model with prediction_type="
                f"{config.get('prediction_type')!r} ({err}); choose e.g. "
                "DPMSolverMultistepScheduler"
            ) from err


@dataclass
class DiffusionComponents:
    """The networks of an image-conditioned latent diffusion model."""

    unet: UNet2DConditionModel
    vae: ModelMixin
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    noise_scheduler: DDPMScheduler


def load_components(
    pretrained: str | Path,
    prediction_type: PredictionType | None,
    unet: UnetKind = "image_conditioned",
) -> DiffusionComponents:
    """Load every component of a diffusers-layout model and check that they fit together.

    Args:
        pretrained: Diffusers-layout directory or hub id.
        prediction_type: What the UNet predicts (``epsilon``, ``sample``, ``v_prediction``);
            ``None`` keeps what the scheduler config states.
        unet: ``image_conditioned`` (IP2P, LEGO: a text-to-image UNet is widened to take the
            input latent) or ``text_to_image`` (SDEdit, ProxEdit: the UNet as is, frozen).

    Returns:
        The components (autoencoder and text encoder frozen).

    Raises:
        ComponentLoadError: If a component is missing or they do not fit together.
    """
    vae = load_autoencoder(pretrained)
    text_encoder, tokenizer = load_text_encoder(pretrained)
    loader = load_image_conditioned_unet if unet == "image_conditioned" else load_text_to_image_unet
    network = loader(pretrained, int(vae.config.latent_channels))
    hidden = text_encoder.config.hidden_size
    if network.config.cross_attention_dim != hidden:
        raise ComponentLoadError(
            f"{_where(pretrained, 'unet')}: cross_attention_dim="
            f"{network.config.cross_attention_dim} but the text encoder's hidden size is {hidden}"
        )
    scheduler = load_noise_scheduler(pretrained, prediction_type)
    return DiffusionComponents(network, vae, text_encoder, tokenizer, scheduler)
