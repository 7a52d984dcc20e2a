"""Export a trained diffusion module as a diffusers pipeline directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from diffusers import StableDiffusionInstructPix2PixPipeline

from lego.interop.pipeline import LegoPipeline
from lego.models.editing.components import make_sampling_scheduler

if TYPE_CHECKING:
    from lego.models.editing.lego import LegoDiffusionModule


def export_pipeline(module: LegoDiffusionModule, out_dir: Path) -> Path:
    """Write ``module`` as a pipeline directory loadable with ``from_pretrained``.

    A module without VLM conditioning (InstructPix2Pix) becomes a stock
    ``diffusers.StableDiffusionInstructPix2PixPipeline`` (no safety checker); a LEGO module becomes
    a :class:`LegoPipeline`. The UNet carries the EMA weights when EMA is enabled, and the
    scheduler is the module's sampler.

    Args:
        module: A built (``configure_model`` called) diffusion module.
        out_dir: The directory to write.

    Returns:
        ``out_dir``.

    Raises:
        RuntimeError: If the module's components are not built yet.
    """
    if not getattr(module, "_built", False):
        raise RuntimeError("export_pipeline needs a built module: call configure_model() first")
    scheduler = make_sampling_scheduler(
        module.sampler, module.noise_scheduler.config, module.sampler_options
    )
    unet = module.unet_for_export()
    if module.vlm_conditioner is None:
        pipeline = StableDiffusionInstructPix2PixPipeline(
            vae=module.vae,
            text_encoder=module.text_encoder,
            tokenizer=module.tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        pipeline = LegoPipeline(
            vae=module.vae,
            text_encoder=module.text_encoder,
            tokenizer=module.tokenizer,
            unet=unet,
            scheduler=scheduler,
            vlm_conditioner=module.vlm_conditioner,
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out_dir)
    return out_dir
