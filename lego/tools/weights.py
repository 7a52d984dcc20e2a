"""Check (and where the network allows, download) the metric weights of the evaluation suite.

Every metric loads its weights from one local directory (``--dir``), in the layout of the paper's
``bolinlai/LEGO-Metrics`` release or with the original files side by side. Without
``--download`` this command only reports, for each weight, where it was found (and in which form:
a transformers directory or the paper's original checkpoint file) or exactly which file or model
directory is missing and where to put it. ``--convert`` writes each original CLIP / BLIP file
found as a transformers directory once, so later runs load it without converting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lego.metrics.weights import WEIGHTS, WeightSpec, find_weight, weight_form


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``python -m lego weights``."""
    parser.add_argument("--dir", type=Path, required=True, help="the metric-weights directory")
    parser.add_argument("--only", nargs="+", choices=sorted(WEIGHTS), default=None,
                        help="weights to check or download (default: all)")
    parser.add_argument("--download", action="store_true",
                        help="download missing weights (Hugging Face hub / direct URLs)")
    parser.add_argument("--convert", action="store_true",
                        help="write original CLIP / BLIP checkpoints found as transformers "
                        "directories (BLIP takes the tokenizer from distilbert-base-uncased/)")


def download(spec: WeightSpec, root: Path) -> Path:
    """Download one weight into ``root``.

    Args:
        spec: The weight.
        root: The metric-weights directory.

    Returns:
        The downloaded path.

    Raises:
        RuntimeError: If there is no download source or the download fails.
    """
    try:
        if spec.is_dir and spec.hub_repo:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(spec.hub_repo, local_dir=root / spec.name))
        if spec.url:
            from torch.hub import download_url_to_file

            target = root / spec.name
            download_url_to_file(spec.url, str(target), progress=True)
            return target
        if spec.hub_repo:
            from huggingface_hub import hf_hub_download, list_repo_files

            matches = [f for f in list_repo_files(spec.hub_repo)
                       if f.rsplit("/", 1)[-1] == spec.name]
            if not matches:
                raise RuntimeError(f"{spec.hub_repo} has no file named {spec.name}")
            return Path(hf_hub_download(spec.hub_repo, matches[0], local_dir=root))
    except RuntimeError:
        raise
    except Exception as err:  # noqa: BLE001 - network and hub errors all mean "not downloaded"
        raise RuntimeError(f"{type(err).__name__}: {err}") from err
    raise RuntimeError("no download source known")


def convert(key: str, found: Path, root: Path) -> Path:
    """Write the original checkpoint ``found`` of weight ``key`` as ``<root>/<spec.name>``.

    Args:
        key: ``clip``, ``blip_base`` or ``blip_large``.
        found: The original file.
        root: The metric-weights directory.

    Returns:
        The written directory.

    Raises:
        RuntimeError: If BLIP's tokenizer directory is absent or the conversion fails.
    """
    from lego.metrics.convert import CheckpointConversionError, convert_to_dir

    spec = WEIGHTS[key]
    kind = "blip" if key.startswith("blip") else "clip"
    tokenizer = None
    if kind == "blip":
        tokenizer = find_weight(root, "distilbert")
        if tokenizer is None:
            raise RuntimeError("BLIP needs the uncased BERT vocabulary: put "
                               f"distilbert-base-uncased/ at {root / 'distilbert-base-uncased'}")
    try:
        return convert_to_dir(kind, found, root / spec.name, tokenizer)
    except CheckpointConversionError as err:
        raise RuntimeError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    """Report each weight's status; download missing ones with ``--download``.

    Returns:
        0 when every requested weight is present (after downloading), 1 otherwise.
    """
    root: Path = args.dir
    keys = args.only or list(WEIGHTS)
    missing = 0
    for key in keys:
        spec = WEIGHTS[key]
        found = find_weight(root, key)
        if found is None and args.download:
            root.mkdir(parents=True, exist_ok=True)
            try:
                download(spec, root)
                found = find_weight(root, key)
            except RuntimeError as err:
                print(f"{key}: download failed ({err})", file=sys.stderr)
        if found is not None and args.convert and weight_form(found) == "original file":
            try:
                found = convert(key, found, root)
                print(f"{key}: converted to {found}", file=sys.stderr)
            except RuntimeError as err:
                print(f"{key}: conversion failed ({err})", file=sys.stderr)
        if found is not None:
            print(f"{key:<13} ok       {found} [{weight_form(found)}]")
            continue
        missing += 1
        kind = "model directory" if spec.is_dir else "file"
        alternative = f" or the original file {root / spec.original}" if spec.original else ""
        print(f"{key:<13} MISSING  {kind} {spec.name}: put it at {root / spec.name}{alternative} "
              f"(source: {spec.url or spec.source})")
    if missing:
        print(f"\n{missing} of {len(keys)} weights missing; metrics needing them are skipped.",
              file=sys.stderr)
        return 1
    return 0
