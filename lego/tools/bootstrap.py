"""Write random SynthEgo-size backbones (diffusers / transformers layouts) for tests and sizing.

The shipped SynthEgo backbones under ``pretrained/`` are trained (``python -m lego backbones``);
this tool writes *untrained* ones of the same architecture, by default to ``pretrained/random``:
``<out>/synthego-sd`` (pixel-unshuffle autoencoder, random CLIP text encoder and tokenizer,
text-to-image UNet, Stable Diffusion's noise schedule) and ``<out>/synthego-vlm`` (a random
LLaVA). Each backbone has a writer ``(root) -> Path``; the tool runs the selected writers in
order and skips those whose output already exists (``--force`` rewrites).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

from lego.models.editing.bootstrap import SYNTHEGO_SD, write_synthego_diffusion


def _write_vlm(root: Path) -> Path:
    """The SynthEgo LLaVA stand-in (randomly initialised) under ``<root>/synthego-vlm``."""
    from lego.models.instruct.bootstrap import write_synthego_vlm

    return write_synthego_vlm(root / "synthego-vlm")


#: The writers run by the tool, in order: ``(name, writer(root) -> written folder, folder)``.
WRITERS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("diffusion", write_synthego_diffusion, SYNTHEGO_SD),
    ("vlm", _write_vlm, "synthego-vlm"),
]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tool's options.

    Args:
        parser: The tool's parser.
    """
    parser.add_argument(
        "--out", type=Path, default=Path("pretrained/random"), help="root of the random backbones"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[name for name, _, _ in WRITERS],
        help="write only these backbones (default: all)",
    )
    parser.add_argument("--force", action="store_true", help="rewrite existing backbones")


def run(args: argparse.Namespace) -> int:
    """Run the selected writers.

    Args:
        args: Parsed options.

    Returns:
        0 on success.
    """
    for name, writer, folder in WRITERS:
        if args.only and name not in args.only:
            continue
        target = args.out / folder
        if target.exists() and not args.force:
            print(f"{name}: {target} exists (use --force to rewrite)")
            continue
        if target.exists():
            shutil.rmtree(target)
        written = writer(args.out)
        print(f"{name}: wrote {written}")
    return 0
