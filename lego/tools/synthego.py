"""Generate the built-in SynthEgo dataset in the EgoGen release layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lego.synthego import generate, write_grid
from lego.synthego.writer import FRAMES_SUBDIR, NAME


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``python -m lego synthego``."""
    parser.add_argument("--out", type=Path, default=Path("data/synthego"), help="dataset root")
    parser.add_argument("--train", type=int, default=2000, help="number of train pairs")
    parser.add_argument("--val", type=int, default=200, help="number of val pairs")
    parser.add_argument("--size", type=int, default=64, help="frame height in pixels")
    parser.add_argument(
        "--aspect", type=float, default=1.0, help="frame width / height (16/9 = 1.778 as Ego4D)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    parser.add_argument("--actions-per-clip", type=int, default=2, help="pairs per scene")
    parser.add_argument(
        "--label-style",
        choices=("ego4d", "plain"),
        default="ego4d",
        help="'#C C picks up the cup' (Ego4D narration) or 'pick up the cup'",
    )
    parser.add_argument(
        "--grid", type=Path, default=None, help="also write a PNG grid of val pairs here"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset (resuming an interrupted run) and report what was written."""
    start = time.perf_counter()
    counts = generate(
        args.out,
        train=args.train,
        val=args.val,
        size=args.size,
        aspect=args.aspect,
        seed=args.seed,
        workers=args.workers,
        actions_per_clip=args.actions_per_clip,
        label_style=args.label_style,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    print(
        f"SynthEgo in {args.out}: {counts['train']} train + {counts['val']} val pairs "
        f"({counts['rendered']} rendered now, {elapsed:.1f} s)"
    )
    if args.grid is not None:
        frames = args.out / "EgoGen" / FRAMES_SUBDIR / "val"
        path = write_grid(args.out / f"{NAME}_val.json", frames, args.grid)
        print(f"Sample grid of val pairs: {path}")
    return 0
