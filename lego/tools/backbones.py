"""Train the SynthEgo backbones the project ships (text-to-image model, VLM) from scratch.

Re-creates ``<out>/synthego-sd`` (the miniature's Stable Diffusion 1.5, a stock
``StableDiffusionPipeline`` folder) and ``<out>/synthego-vlm`` (the miniature's LLaVA, pretrained
to ground objects), each with its model card (``README.md``, ``training.json``) and scores on
held-out scenes. Deterministic for a seed on a given machine and thread count. On two CPU cores
the shipped recipes take hours; ``--steps-scale`` shortens them for a trial. A killed build
resumes where its last saved state (``<folder>.partial``, every 500 steps) left off when the same
command is run again.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from lego.zoo import TextToImageRecipe, VLMRecipe, train_text_to_image, train_vlm
from lego.zoo.checkpoint import partial_dir

#: Backbone name -> folder under ``--out``.
FOLDERS = {"text-to-image": "synthego-sd", "vlm": "synthego-vlm"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tool's options.

    Args:
        parser: The tool's parser.
    """
    parser.add_argument("--out", type=Path, default=Path("pretrained"),
                        help="root of the backbones (default: pretrained)")
    parser.add_argument("--only", nargs="+", choices=list(FOLDERS),
                        help="train only these backbones (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of scenes, weights and draws")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every recipe's step counts (e.g. 0.1 for a trial run)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing backbone folders")
    parser.add_argument("--restart", action="store_true",
                        help="discard the saved state of an unfinished build instead of resuming")
    parser.add_argument("--eval-every", type=int, default=1000,
                        help="score the VLM's grounding every N steps (0: at the end only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def run(args: argparse.Namespace) -> int:
    """Train the selected backbones.

    Args:
        args: Parsed options.

    Returns:
        0 on success, 2 if a folder exists and ``--force`` was not given.
    """
    command = "python -m lego backbones " + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else [])
    chosen = args.only or list(FOLDERS)
    for name in chosen:
        target = args.out / FOLDERS[name]
        if target.exists() and not args.force:
            print(f"{name}: {target} exists; use --force to train it again", file=sys.stderr)
            return 2
    scale = args.steps_scale
    for name in chosen:
        target = args.out / FOLDERS[name]
        if target.exists():
            shutil.rmtree(target)
        if args.restart:
            shutil.rmtree(partial_dir(target), ignore_errors=True)
        print(f"{name}: training into {target}", flush=True)
        if name == "text-to-image":
            recipe = TextToImageRecipe(seed=args.seed)
            recipe = replace(recipe, steps=_scaled(recipe.steps, scale))
            scores = train_text_to_image(target, recipe, progress=not args.quiet,
                                         command=command.strip())
        else:
            vlm = VLMRecipe(seed=args.seed)
            vlm = replace(vlm, steps=_scaled(vlm.steps, scale),
                          vision_steps=_scaled(vlm.vision_steps, scale))
            scores = train_vlm(target, vlm, progress=not args.quiet, command=command.strip(),
                               eval_every=args.eval_every)
        summary = ", ".join(f"{k} {v:.1f}" for k, v in scores.items())
        print(f"{name}: wrote {target} ({summary}; card: {target / 'README.md'})", flush=True)
    return 0
