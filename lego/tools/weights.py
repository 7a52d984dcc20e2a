"""Check (and where the network allows, download) the metric weights of the evaluation suite.

Every metric loads its weights from one local directory (``--dir``), in the layout of the paper's
``bolinlai/LEGO-Metrics`` release or with the original files side by side. Without
``--download`` this command only reports, for each weight, where it was found or exactly which
file or model directory is missing and where to put it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lego.metrics.weights import WEIGHTS, WeightSpec, find_weight


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``python -m lego weights``."""
    parser.add_argument("--dir", type=Path, required=True, help="the metric-weights directory")
    parser.add_argument("--only", nargs="+", choices=sorted(WEIGHTS), default=None,
                        help="weights to check or download (default: all)")
    parser.add_argument("--download", action="store_true",
                        help="download missing weights (Hugging Face hub / direct URLs)")


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
        if found is not None:
            print(f"{key:<13} ok       {found}")
            continue
        missing += 1
        kind = "model directory" if spec.is_dir else "file"
        print(f"{key:<13} MISSING  {kind} {spec.name}: put it at {root / spec.name} "
              f"(source: {spec.url or spec.source})")
    if missing:
        print(f"\n{missing} of {len(keys)} weights missing; metrics needing them are skipped.",
              file=sys.stderr)
        return 1
    return 0
