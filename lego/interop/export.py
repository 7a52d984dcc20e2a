"""Export a trained diffusion module as a diffusers pipeline directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from diffusers import DiffusionPipeline, StableDiffusionInstructPix2PixPipeline

from lego.interop.pipeline import LegoPipeline
from lego.models.editing.components import make_sampling_scheduler


class DiffusionModule(Protocol):
    """What export needs of a diffusion module (``LegoDiffusionModule`` and its subclasses)."""

    sampler: str
    sampler_options: dict[str, Any] | None
    noise_scheduler: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any

    def sampling_modules(self) -> tuple[Any, Any]:
        """The UNet and VLM conditioner to sample with (EMA weights when enabled)."""
        ...


def build_pipeline(module: DiffusionModule, unet: Any = None) -> DiffusionPipeline:
    """The module as an in-memory diffusers pipeline, sampling with the module's sampler.

    A module without VLM conditioning (InstructPix2Pix) becomes a stock
    ``diffusers.StableDiffusionInstructPix2PixPipeline`` (no safety checker); a LEGO module becomes
    a :class:`LegoPipeline`.

    Args:
        module: A built (``configure_model`` called) diffusion module.
        unet: The UNet to use (default: the EMA weights when EMA is enabled, else the live UNet;
            the VLM conditioner always comes with the EMA weights when they cover it).

    Returns:
        The pipeline, sharing the module's networks.

    Raises:
        RuntimeError: If the module's components are not built yet.
    """
    if not getattr(module, "_built", False):
        raise RuntimeError("the pipeline needs a built module: call configure_model() first")
    scheduler = make_sampling_scheduler(
        module.sampler, module.noise_scheduler.config, module.sampler_options
    )
    ema_unet, conditioner = module.sampling_modules()
    parts = {
        "vae": module.vae,
        "text_encoder": module.text_encoder,
        "tokenizer": module.tokenizer,
        "unet": unet if unet is not None else ema_unet,
        "scheduler": scheduler,
    }
    if conditioner is None:
        return StableDiffusionInstructPix2PixPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    return LegoPipeline(**parts, vlm_conditioner=conditioner)


def export_pipeline(module: DiffusionModule, out_dir: Path) -> Path:
    """Write ``module`` as a pipeline directory loadable with ``from_pretrained``.

    The pipeline is :func:`build_pipeline`'s: stock ``StableDiffusionInstructPix2PixPipeline``
    for InstructPix2Pix, :class:`LegoPipeline` for LEGO, with the EMA UNet when EMA is enabled.

    Args:
        module: A built (``configure_model`` called) diffusion module.
        out_dir: The directory to write.

    Returns:
        ``out_dir``.

    Raises:
        RuntimeError: If the module's components are not built yet.
    """
    pipeline = build_pipeline(module)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out_dir)
    return out_dir
