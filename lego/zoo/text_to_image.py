"""The SynthEgo text-to-image model: the miniature's Stable Diffusion 1.5, trained from scratch.

A latent diffusion model (the pixel-unshuffle autoencoder, a CLIP text encoder over the SynthEgo
word tokenizer, a text-to-image UNet) learns to draw SynthEgo table tops from a caption naming
every object, its colour and its place (:func:`lego.zoo.scenes.caption`). As the original
latent diffusion models trained their transformer text encoder with the UNet, the text encoder
trains too; the IP2P and LEGO stages then keep it frozen, as they keep SD's CLIP frozen. The
result is saved as a stock ``StableDiffusionPipeline`` folder (``model_index.json``), so
``StableDiffusionPipeline`` and ``StableDiffusionImg2ImgPipeline`` load it with
``from_pretrained``, and the diffusion modules widen its UNet's ``conv_in`` as they do SD 1.5's.

Miniature-only choices (documented on the card): the UNet predicts the clean latent
(``prediction_type="sample"``; epsilon gives noise in a CPU budget, ``synthego.md``) and training
timesteps follow a logit-normal density.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import (
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.training_utils import EMAModel
from torch import Tensor
from torchvision.utils import save_image
from tqdm.auto import tqdm

from lego.models.editing.bootstrap import write_diffusion_backbone
from lego.models.editing.components import (
    SAMPLING_SPACING,
    load_autoencoder,
    load_noise_scheduler,
    load_text_encoder,
)
from lego.models.editing.timesteps import draw_timesteps
from lego.synthego import vocabulary, world
from lego.zoo.card import machine, write_card
from lego.zoo.checkpoint import load_state, partial_dir, save_state
from lego.zoo.scenes import ObjectFact, caption, render_pool


@dataclass
class TextToImageRecipe:
    """How the text-to-image model is trained (the defaults make the shipped model).

    Attributes:
        seed: Seed of the scenes, the initial weights and the training draws.
        scenes: Pretraining scenes rendered (``zoo-<seed>``).
        steps: Optimiser steps.
        batch_size: Scenes per step.
        learning_rate: AdamW learning rate (constant after ``warmup_steps``).
        warmup_steps: Linear warm-up steps.
        ema_decay: Decay of the EMA weights that are saved.
        caption_dropout: Share of captions replaced by the empty prompt (for guidance).
        timestep_logit_mean: Mean of the logit-normal training timestep density.
        train_text_encoder: Train the text encoder with the UNet.
        resolution: Frame side in pixels.
        block_out_channels: UNet channels per level.
        text_hidden_size: Width of the text encoder (= the UNet's cross-attention width).
        eval_scenes: Held-out scenes (``zooval-<seed>``) generated to score the model.
        guidance_scale: Classifier-free guidance of the saved pipeline's scoring.
        sample_steps: DPM-Solver++ steps of the scoring.
    """

    seed: int = 0
    scenes: int = 20000
    steps: int = 6000
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    timestep_logit_mean: float = 1.0
    train_text_encoder: bool = True
    resolution: int = 64
    block_out_channels: tuple[int, ...] = field(default_factory=lambda: (32, 64))
    text_hidden_size: int = 64
    eval_scenes: int = 200
    guidance_scale: float = 3.0
    sample_steps: int = 20


#: The palette test: an object is drawn when this many pixels (at 64 x 64) are within this
#: tolerance of its colour on every channel.
TOLERANCE = 40.0
MIN_PIXELS = 6
#: A looser palette test (small objects such as the knife show their colour on a few pixels).
LOOSE_TOLERANCE = 50.0
LOOSE_MIN_PIXELS = 4


def palette_scores(
    images: Tensor, objects: list[tuple[ObjectFact, ...]], tolerance: float = TOLERANCE,
    min_pixels: int = MIN_PIXELS,
) -> dict[str, float]:
    """How many captioned objects a generated scene shows in their colour (SynthEgo palette).

    An object counts as drawn when at least ``min_pixels`` pixels (at 64 x 64; scaled with the
    area) are within ``tolerance`` of its palette colour on every channel; it is at its place
    when the centroid of those pixels falls in the captioned place.

    Args:
        images: Generated frames ``B x 3 x H x W`` in [0, 1].
        objects: The captioned objects of each frame.
        tolerance: Colour tolerance per channel (0-255).
        min_pixels: Pixels needed at 64 x 64.

    Returns:
        Percentages: ``objects_in_colour``, ``scenes_all_in_colour`` (every captioned object
        drawn), ``objects_at_place`` (drawn at its place) and ``uncaptioned_colours`` (palette
        colours drawn that the caption does not name, per scene).
    """
    drawn = at_place = scenes_all = extra = total = 0
    palette = {name: np.array(rgb, dtype=np.float32) for name, rgb in world.COLOURS.items()}
    for image, facts in zip(images, objects, strict=True):
        pixels = image.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0
        h, w = pixels.shape[:2]
        need = max(1, round(min_pixels * h * w / 4096))
        present = {}
        for name, rgb in palette.items():
            mask = np.abs(pixels - rgb).max(axis=-1) <= tolerance
            if mask.sum() >= need:
                present[name] = mask
        every = True
        for fact in facts:
            total += 1
            mask = present.get(fact.colour)
            if mask is None:
                every = False
                continue
            drawn += 1
            ys, xs = np.nonzero(mask)
            if world.place_name((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h) == fact.place:
                at_place += 1
        scenes_all += every
        extra += len(set(present) - {f.colour for f in facts})
    n = max(1, len(objects))
    return {
        "objects_in_colour": 100.0 * drawn / max(1, total),
        "scenes_all_in_colour": 100.0 * scenes_all / n,
        "objects_at_place": 100.0 * at_place / max(1, total),
        "uncaptioned_colours": extra / n,
    }


def _encode(pipe: StableDiffusionPipeline, texts: list[str]) -> Tensor:
    ids = pipe.tokenizer(
        texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids
    return pipe.text_encoder(ids)[0]


def build_pipeline(root: Path, recipe: TextToImageRecipe) -> StableDiffusionPipeline:
    """Write the untrained backbone to ``root`` and load it as a ``StableDiffusionPipeline``.

    The pipeline samples with DPM-Solver++ over the backbone's training schedule (clean-latent
    prediction), its steps spaced as the diffusion modules space them (first step ``t = 999``).
    """
    write_diffusion_backbone(
        root, vocabulary(), resolution=recipe.resolution, hidden_size=recipe.text_hidden_size,
        block_out_channels=recipe.block_out_channels, seed=recipe.seed,
    )
    training = load_noise_scheduler(root, "sample")
    text_encoder, tokenizer = load_text_encoder(root)
    pipe = StableDiffusionPipeline(
        vae=load_autoencoder(root),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=UNet2DConditionModel.from_pretrained(root, subfolder="unet"),
        scheduler=DPMSolverMultistepScheduler.from_config(
            training.config, algorithm_type="dpmsolver++", **SAMPLING_SPACING
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(
    pipe: StableDiffusionPipeline, captions: list[str], recipe: TextToImageRecipe,
    batch_size: int = 50,
) -> Tensor:
    """Generate one frame per caption with the stock pipeline (seeded per caption index)."""
    out = []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start : start + batch_size]
        generators = [
            torch.Generator().manual_seed(recipe.seed * 100_003 + start + i)
            for i in range(len(chunk))
        ]
        out.append(
            pipe(
                prompt=chunk, num_inference_steps=recipe.sample_steps,
                guidance_scale=recipe.guidance_scale, generator=generators, output_type="pt",
            ).images
        )
    return torch.cat(out)


def train_text_to_image(
    out_dir: Path,
    recipe: TextToImageRecipe | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str = "python -m lego backbones --only text-to-image",
    checkpoint_every: int = 500,
) -> dict[str, Any]:
    """Train the SynthEgo text-to-image model and save it, scored, with its card.

    Args:
        out_dir: The pipeline folder to write (``pretrained/synthego-sd``).
        recipe: Training settings (default: the shipped model's).
        progress: Show progress bars.
        log: Where progress lines go (one every tenth of the run).
        command: The command recorded on the card.
        checkpoint_every: Save the training state every this many steps (0: never); a build
            started again with the same recipe resumes from it (:mod:`lego.zoo.checkpoint`).

    Returns:
        The scores on held-out scenes (see :func:`palette_scores`).
    """
    recipe = recipe or TextToImageRecipe()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    pool = render_pool(recipe.seed, recipe.scenes, size=recipe.resolution, progress=progress)
    captions = [caption(o) for o in pool.objects]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(Path(tmp) / "init", recipe)
    unet, text_encoder, vae = pipe.unet, pipe.text_encoder, pipe.vae
    ddpm = DDPMScheduler.from_config(pipe.scheduler.config)  # the training noise schedule
    params = list(unet.parameters())
    text_encoder.requires_grad_(recipe.train_text_encoder)
    if recipe.train_text_encoder:
        params += list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.01)
    ema = EMAModel(unet.parameters(), decay=recipe.ema_decay, use_ema_warmup=False)
    ema_text = (
        EMAModel(text_encoder.parameters(), decay=recipe.ema_decay, use_ema_warmup=False)
        if recipe.train_text_encoder else None
    )
    scale = float(vae.config.scaling_factor)
    unet.train()
    text_encoder.train(recipe.train_text_encoder)
    parts: dict[str, Any] = {"unet": unet, "optimizer": optimizer, "ema": ema}
    if ema_text is not None:
        parts.update(text_encoder=text_encoder, ema_text=ema_text)
    losses: list[float] = []
    start = 1
    resumed = load_state(out_dir, asdict(recipe), parts, rng)
    if resumed is not None:
        start, losses = resumed[0] + 1, list(resumed[1]["losses"])
        started -= float(resumed[1]["seconds"])  # the card counts the earlier sessions' time
        log(f"text-to-image: resuming at step {start} from {partial_dir(out_dir)}")
    else:
        torch.manual_seed(recipe.seed)  # loading may draw from the global generator once a process
    every = max(1, recipe.steps // 10)
    bar = tqdm(range(start, recipe.steps + 1), desc="text-to-image", disable=not progress,
               initial=start - 1, total=recipe.steps)
    for step in bar:
        index = [rng.randrange(len(pool)) for _ in range(recipe.batch_size)]
        frames = pool.frames[index].float() / 127.5 - 1.0
        texts = ["" if rng.random() < recipe.caption_dropout else captions[i] for i in index]
        latents = vae.encode(frames).latent_dist.sample() * scale
        timesteps = draw_timesteps(
            "logit_normal", len(index), ddpm.config.num_train_timesteps, "cpu",
            logit_mean=recipe.timestep_logit_mean,
        )
        noisy = ddpm.add_noise(latents, torch.randn_like(latents), timesteps)
        context = _encode(pipe, texts)
        pred = unet(noisy, timesteps, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred.float(), latents.float())
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate * min(1.0, step / max(1, recipe.warmup_steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.step(unet.parameters())
        if ema_text is not None:
            ema_text.step(text_encoder.parameters())
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % every == 0 or step == recipe.steps:
            log(f"text-to-image step {step}/{recipe.steps}: loss {np.mean(losses[-every:]):.4f}, "
                f"{time.perf_counter() - started:.0f} s")
        if checkpoint_every and step % checkpoint_every == 0 and step < recipe.steps:
            save_state(out_dir, step, asdict(recipe), parts, rng,
                       {"losses": losses, "seconds": time.perf_counter() - started})
    ema.copy_to(unet.parameters())
    if ema_text is not None:
        ema_text.copy_to(text_encoder.parameters())
    unet.eval()
    text_encoder.eval()
    text_encoder.requires_grad_(False)
    train_seconds = time.perf_counter() - started
    pipe.save_pretrained(out_dir)
    shutil.rmtree(partial_dir(out_dir), ignore_errors=True)
    scores = score_pipeline(out_dir, recipe, progress=progress, samples=out_dir / "samples.png")
    log("text-to-image scores on held-out scenes: " + ", ".join(
        f"{k} {v:.1f}" for k, v in scores.items()))
    write_text_to_image_card(out_dir, recipe, command, {
        "training scenes": f"{recipe.scenes} (split zoo-{recipe.seed}, never a demo scene)",
        "steps": recipe.steps,
        "samples seen": recipe.steps * recipe.batch_size,
        "final loss (mean of the last tenth)": round(float(np.mean(losses[-every:])), 4),
        "wall time (training and scoring)": f"{time.perf_counter() - started:.0f} s",
        "training time": f"{train_seconds:.0f} s",
        "machine": ", ".join(f"{k} {v}" for k, v in machine().items() if v is not None),
        "UNet parameters": sum(p.numel() for p in unet.parameters()),
        "text encoder parameters": sum(p.numel() for p in text_encoder.parameters()),
    }, scores)
    return scores


def write_text_to_image_card(
    out_dir: Path, recipe: TextToImageRecipe, command: str, training: dict[str, Any],
    scores: dict[str, float],
) -> Path:
    """Write the text-to-image model's card (``README.md``, ``training.json``).

    Args:
        out_dir: The pipeline folder.
        recipe: How it was trained.
        command: The command that re-creates it.
        training: Steps, samples, times, machine.
        scores: :func:`score_pipeline`'s figures.

    Returns:
        The card's path.
    """
    return write_card(
        out_dir,
        title="SynthEgo text-to-image (the miniature's Stable Diffusion 1.5)",
        summary=(
            "A latent diffusion model that draws SynthEgo table tops from a caption naming each "
            "object, its colour and its place, e.g. *a green cup at the upper left and a red bowl "
            "at the lower right of the table.* Pixel-unshuffle autoencoder (factor 4, 48 latent "
            "channels), CLIP text encoder over the SynthEgo word tokenizer, text-to-image UNet. "
            "IP2P and LEGO start from it (their `conv_in` widened as for SD 1.5); "
            "`StableDiffusionImg2ImgPipeline` loads it for training-free editing."
        ),
        library="diffusers",
        usage=(
            "from diffusers import StableDiffusionPipeline\n"
            f"pipe = StableDiffusionPipeline.from_pretrained('{out_dir}')\n"
            "image = pipe('a red cup at the upper left and a blue bowl at the lower right of the "
            f"table.', num_inference_steps={recipe.sample_steps}, "
            f"guidance_scale={recipe.guidance_scale}).images[0]"
        ),
        command=command,
        settings={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()},
        training=training,
        scores={k: f"{v:.1f} %" if "colours" not in k else f"{v:.2f}" for k, v in scores.items()},
        notes=(
            "Scored on held-out scenes (`zooval`): each caption generated once with the stock "
            "pipeline (DPM-Solver++, linspace timesteps as saved in `scheduler/`), and each "
            f"captioned object counted as drawn when at least {MIN_PIXELS} pixels are within "
            f"{TOLERANCE:g} of its palette colour on every channel "
            "(`lego.zoo.text_to_image.palette_scores`); the `_loose` figures count "
            f"{LOOSE_MIN_PIXELS} pixels within {LOOSE_TOLERANCE:g} (knives show their colour "
            "only on a small handle). `samples.png` shows the first 16 held-out captions' "
            "frames. Miniature-only choices: clean-latent prediction "
            "(`prediction_type: sample`) and logit-normal training timesteps."
        ),
    )


def score_pipeline(
    folder: Path, recipe: TextToImageRecipe, progress: bool = False, samples: Path | None = None,
) -> dict[str, float]:
    """Load a saved pipeline with stock diffusers, generate held-out captions and score them.

    Args:
        folder: The pipeline folder.
        recipe: Its recipe (seed, resolution, held-out scenes, guidance, steps).
        progress: Show progress bars.
        samples: Also write the first 16 frames here as a PNG grid.

    Returns:
        :func:`palette_scores`' figures, plus ``objects_in_colour_loose`` and
        ``scenes_all_in_colour_loose`` at :data:`LOOSE_TOLERANCE` / :data:`LOOSE_MIN_PIXELS`.
    """
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pool = render_pool(recipe.seed, recipe.eval_scenes, part="zooval",
                       size=recipe.resolution, progress=progress)
    images = generate(pipe, [caption(o) for o in pool.objects], recipe)
    if samples is not None:
        save_image(images[:16], samples, nrow=8, padding=1)
    scores = palette_scores(images, pool.objects)
    loose = palette_scores(images, pool.objects, tolerance=LOOSE_TOLERANCE,
                           min_pixels=LOOSE_MIN_PIXELS)
    scores.update({f"{k}_loose": loose[k] for k in ("objects_in_colour", "scenes_all_in_colour")})
    return scores
