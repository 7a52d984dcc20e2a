"""Import the paper's released artefacts: its .npy VLM features, an original-format LLaVA.

``python -m lego import-weights features --records data/ego4d/ego4d_val.json --image-root
<release>/llava_image/val --text-root <release>/llava_text/val --out features/ego4d/val``
copies one split of the released per-sample VLM features (``bolinlai/LEGO-VLLM-Features-*``) into
a feature cache that ``features: features/ego4d`` reads, as the describe stage would have
written it. Rerun the same command after an interruption: finished samples are kept.

``python -m lego import-weights llava --checkpoint <llava-llama-2-13b-chat folder> --out
checkpoints/llava-13b-hf`` writes the paper's VLM (original LLaVA format) as a transformers
``LlavaForConditionalGeneration`` folder with its processor (:mod:`lego.interop.llava_original`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lego.data.io import DataFormatError
from lego.errors import UserError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tool's options."""
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    features = kinds.add_parser(
        "features", help="the paper's per-sample .npy VLM features -> a feature cache",
        description="Copy one split of the released .npy VLM features into a feature cache.",
    )
    features.add_argument("--records", type=Path, required=True,
                          help="records file of the split (e.g. data/ego4d/ego4d_val.json)")
    features.add_argument("--image-root", type=Path, required=True,
                          help="folder of the split's image features (<image_0 as .npy>)")
    features.add_argument("--text-root", type=Path, required=True,
                          help="folder of the split's text features (<image_0 as .npy>)")
    features.add_argument("--out", type=Path, required=True,
                          help="the cache folder of the split (e.g. features/ego4d/val)")
    features.add_argument("--description-key", default="llava_forecast_finetune",
                          help="record field of the enriched description stored with them")
    features.add_argument("--embed-dim", type=int, default=None,
                          help="expected width D (the paper's 13B VLM: 5120)")
    features.add_argument("--shard-size", type=int, default=256, help="samples per shard")
    features.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    llava = kinds.add_parser(
        "llava", help="an original-format LLaVA folder -> a transformers LLaVA folder",
        description="Write an original LLaVA checkpoint (the paper's llava-llama-2-13b-chat "
                    "format) as a LlavaForConditionalGeneration folder with its processor.",
    )
    llava.add_argument("--checkpoint", type=Path, required=True,
                       help="the original folder (config.json, weights, tokenizer)")
    llava.add_argument("--out", type=Path, required=True,
                       help="the transformers folder to write (model_name_or_path of the "
                            "instruct / describe configs)")
    llava.add_argument("--vision-tower", default=None,
                       help="CLIP vision tower folder or hub id (default: the config's "
                            "mm_vision_tower)")
    llava.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                       help="saved dtype (default: the checkpoint's)")


def run(args: argparse.Namespace) -> int:
    """Run the import; a missing or malformed file is one error line (exit 2)."""
    if args.kind == "llava":
        return _llava(args)
    from lego.interop.npy_features import import_npy_features

    try:
        report = import_npy_features(
            args.records, args.image_root, args.text_root, args.out,
            description_key=args.description_key, embed_dim=args.embed_dim,
            shard_size=args.shard_size, progress=not args.no_progress,
        )
    except (DataFormatError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        print("(samples imported before it are kept; rerun to continue)", file=sys.stderr)
        return 2
    print(f"{report.cache_dir}: {report.imported} samples imported, {report.already} already "
          f"there, {report.total} in {args.records}")
    return 0


def _llava(args: argparse.Namespace) -> int:
    import torch

    from lego.interop.llava_original import import_llava

    try:
        out = import_llava(args.checkpoint, args.out, vision_tower=args.vision_tower,
                           dtype=getattr(torch, args.dtype) if args.dtype else None)
    except (UserError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{out}: LlavaForConditionalGeneration and its processor (from {args.checkpoint})")
    return 0
