"""Score a folder of generated action frames against the ground truth with the paper's metrics.

Folders follow the release layout ``<clip>/<action>/<frame>``: the generated frame of a record is
``--generated/<image_1>`` (the paper's outputs keep the ground-truth file name; a file with the
same stem and another image suffix is accepted), the ground truth is ``--ground-truth/<image_1>``
(``val_gt_for_metric``) and the input frame ``--inputs/<image_0>`` (``val``, for EgoVLP+).
Frames are scored as stored; the protocol decides LPIPS's input range and the FID sets
(``official``: every image of both folders; ``clean``: the scored pairs).

Example (``D=data/EgoGen/ego4d.fho``)::

    python -m lego evaluate --generated out/images --ground-truth $D/val_gt_for_metric
        --records data/ego4d_val.json --inputs $D/val --weights metric_weights
        --protocol official --dataset ego4d
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lego.data.io import DataFormatError, load_json, safe_join
from lego.data.records import open_rgb, read_records
from lego.metrics.protocol import get_protocol, pil_to_tensor01
from lego.metrics.suite import ALL_METRICS, EditMetricSuite, ScoredPair, markdown_table

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Problems:
    """Bad input met while scoring, by sample id (or file for unpaired FID images)."""

    missing_generated: list[str] = field(default_factory=list)
    missing_ground_truth: list[str] = field(default_factory=list)
    missing_input: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    missing_metadata: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """The problems as a dict of lists."""
        return {k: list(v) for k, v in vars(self).items()}

    def count(self) -> int:
        """Total number of problems."""
        return sum(len(v) for v in vars(self).values())

    def summary(self) -> str:
        """One line per kind of problem, with up to 10 ids each."""
        lines = []
        for kind, ids in self.as_dict().items():
            if ids:
                shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
                lines.append(f"  {kind.replace('_', ' ')}: {len(ids)} ({shown})")
        return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``python -m lego evaluate``."""
    parser.add_argument("--generated", type=Path, required=True,
                        help="folder of generated frames, <clip>/<action>/<frame>")
    parser.add_argument("--ground-truth", type=Path, required=True,
                        help="folder of ground-truth action frames (val_gt_for_metric)")
    parser.add_argument("--records", type=Path, required=True,
                        help="records file of the split (e.g. ego4d_val.json)")
    parser.add_argument("--inputs", type=Path, default=None,
                        help="folder of input frames (the val split), for EgoVLP+")
    parser.add_argument("--metadata", type=Path, default=None,
                        help="<name>_metadata.json (SynthEgo scene records for its score)")
    parser.add_argument("--protocol", choices=["official", "clean"], default="clean",
                        help="official: LPIPS fed [0,1], FID over whole folders; clean: fixed")
    parser.add_argument("--weights", type=Path, default=None,
                        help="local directory with the metric weights (LEGO-Metrics layout)")
    parser.add_argument("--metrics", nargs="+", choices=list(ALL_METRICS), default=None,
                        help="metrics to compute (default: all the paper's)")
    parser.add_argument("--dataset", choices=["ego4d", "epickitchen", "synthego"],
                        default="ego4d", help="chooses the EgoVLP checkpoint and clip length")
    parser.add_argument("--description-key", default="llava_forecast_finetune",
                        help="record field with the enriched description (BLIP metrics)")
    parser.add_argument("--output", type=Path, default=None,
                        help="metrics.json path (default: <generated>/../metrics.json)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs scored together")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device")
    parser.add_argument("--strict", action="store_true",
                        help="any missing, unreadable or mis-sized file is an error")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def find_generated(root: Path, relative: str, where: str) -> Path | None:
    """The generated file for ``relative``: the same path, or the same stem with an image suffix."""
    path = safe_join(root, relative, where)
    if path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


#: Depth of a frame in the release layout: ``<clip>/<action>/<frame>``.
FRAME_DEPTH = 3


def walk_images(root: Path) -> tuple[list[Path], list[Path]]:
    """The FID folder set under ``root``: every frame in the release layout, sorted.

    Returns:
        ``(frames, stray)``: the image files at ``<clip>/<action>/<frame>``, and the other image
        files (a grid or a copy left beside the frames), which are not frames and stay out.
    """
    images = sorted(p for p in root.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    frames = [p for p in images if len(p.relative_to(root).parts) == FRAME_DEPTH]
    return frames, [p for p in images if len(p.relative_to(root).parts) != FRAME_DEPTH]


def _read(path: Path, where: str) -> torch.Tensor:
    return pil_to_tensor01(open_rgb(path, where))


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


#: How far (in 8-bit levels) from 0 and 255 a min-max stretched frame may stay after JPEG
#: compression; a frame whose extremes are further in was not stretched as the paper's were.
STRETCH_SLACK = 16


def official_file_check(path: Path, image: torch.Tensor) -> list[str]:
    """Why a generated file cannot be one of the paper's (empty when it can).

    The paper's inference writes each frame min-max stretched (darkest value 0, brightest 255)
    and saved as JPEG at quality 75; ``--protocol official`` assumes files made that way.

    Args:
        path: The generated file.
        image: Its pixels, ``3 x H x W`` in [0, 1].

    Returns:
        ``"png"`` (lossless, not the paper's JPEG) and / or ``"not_stretched"``.
    """
    reasons = []
    if path.suffix.lower() == ".png":
        reasons.append("png")
    levels = image * 255.0
    if levels.min() > STRETCH_SLACK or levels.max() < 255 - STRETCH_SLACK:
        reasons.append("not_stretched")
    return reasons


def check_metadata(metadata: Any, records: list[Any], path: Path, records_path: Path) -> None:
    """Refuse metadata that is not the records' dataset's (no clip of the records in it).

    Args:
        metadata: The parsed metadata file.
        records: The records scored.
        path: The metadata file, for the message.
        records_path: The records file, for the message.

    Raises:
        DataFormatError: If the metadata is not an object or names none of the records' clips.
    """
    if not isinstance(metadata, dict):
        raise DataFormatError(f"{path}: expected an object keyed by clip id")
    clips = sorted({rec.clip_id for rec in records})
    if clips and not any(clip in metadata for clip in clips):
        raise DataFormatError(
            f"{path}: none of the {len(clips)} clips of {records_path} has an entry (e.g. "
            f"{clips[0]!r}; the metadata names e.g. {next(iter(metadata), None)!r}): is it "
            "another dataset's metadata?"
        )


def evaluate(args: argparse.Namespace) -> tuple[dict[str, Any], Problems]:
    """Score the folders; return the result record and the problems met.

    Raises:
        DataFormatError: If the records or metadata file is malformed.
    """
    protocol = get_protocol(args.protocol)
    metadata = load_json(args.metadata) if args.metadata is not None else None
    records = read_records(args.records)
    if metadata is not None:
        check_metadata(metadata, records, args.metadata, args.records)
    problems = Problems()
    suite = EditMetricSuite(
        metrics=args.metrics, weights_dir=args.weights, protocol=protocol.name,
        dataset=args.dataset, metadata=metadata, fid_from_pairs=protocol.fid_sets == "pairs",
        warn=lambda msg: print(f"warning: {msg}", file=sys.stderr),
    ).to(args.device)
    scored = 0
    not_official: dict[str, list[str]] = {"png": [], "not_stretched": []}
    bar = tqdm(total=len(records), desc="evaluate", unit="img", disable=args.no_progress)
    for chunk in _batches(records, max(1, args.batch_size)):
        pairs = []
        for rec in chunk:
            sid, where = rec.sample_id, rec.where()
            if metadata is not None and rec.clip_id not in metadata:
                problems.missing_metadata.append(sid)
                continue
            image_1 = rec.fields.get("image_1")
            if not isinstance(image_1, str):
                problems.missing_ground_truth.append(sid)
                continue
            gt_path = safe_join(args.ground_truth, image_1, where)
            gen_path = find_generated(args.generated, image_1, where)
            if not gt_path.is_file():
                problems.missing_ground_truth.append(sid)
                continue
            if gen_path is None:
                problems.missing_generated.append(sid)
                continue
            try:
                target = _read(gt_path, where)
                generated = _read(gen_path, where)
            except DataFormatError:
                problems.unreadable.append(sid)
                continue
            context = None
            if args.inputs is not None and isinstance(rec.fields.get("image_0"), str):
                try:
                    context = _read(safe_join(args.inputs, rec.fields["image_0"], where), where)
                except DataFormatError:
                    problems.missing_input.append(sid)
            if generated.shape != target.shape:
                problems.size_mismatch.append(sid)
            if protocol.name == "official":
                for reason in official_file_check(gen_path, generated):
                    not_official[reason].append(sid)
            description = rec.fields.get(args.description_key)
            pairs.append(ScoredPair(sid, generated, target, context,
                                    description if isinstance(description, str) else None))
        suite.update(pairs)
        scored += len(pairs)
        bar.update(len(chunk))
    bar.close()
    if scored == 0:  # nothing paired: no metric can be computed (run() says so)
        return {"samples": len(records), "scored": 0}, problems
    fid_counts: dict[str, int] = {}
    fid_ignored: dict[str, list[str]] = {}
    if "fid" in suite.metrics and protocol.fid_sets == "folders":
        for real, root in ((True, args.ground_truth), (False, args.generated)):
            files, stray = walk_images(root)
            fid_counts["real" if real else "generated"] = len(files)
            if stray:
                fid_ignored[str(root)] = [str(p.relative_to(root)) for p in stray]
                print(f"warning: {len(stray)} image(s) under {root} are not at "
                      f"<clip>/<action>/<frame> and stay out of FID: "
                      f"{', '.join(fid_ignored[str(root)][:5])}", file=sys.stderr)
            for path in tqdm(files, desc=f"FID {'ground truth' if real else 'generated'}",
                             unit="img", disable=args.no_progress):
                try:
                    image = _read(path, "FID folder set")
                except DataFormatError:
                    problems.unreadable.append(str(path))
                    continue
                suite.update_fid(image[None].to(args.device), real=real)
    results = suite.compute()
    for reason, ids in not_official.items():
        if ids:
            what = ("are PNG (the paper's frames are JPEG at quality 75)" if reason == "png"
                    else "never reach 0 and 255 (the paper's frames are min-max stretched)")
            print(f"warning: official protocol, but {len(ids)} generated frame(s) {what}: "
                  f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}; FramesWriter with "
                  "stretch: minmax, image_format: jpeg, jpeg_quality: 75 writes them as the "
                  "paper did", file=sys.stderr)
    report = suite.report(
        results, samples=len(records), scored=scored, generated_dir=str(args.generated),
        ground_truth_dir=str(args.ground_truth), records=str(args.records),
        inputs_dir=str(args.inputs) if args.inputs else None, fid_images=fid_counts,
        fid_ignored=fid_ignored,
        problems=problems.as_dict(), captions=suite.captions(),
    )
    if protocol.name == "official":
        report["not_official_files"] = not_official
    return report, problems


def run(args: argparse.Namespace) -> int:
    """Run ``python -m lego evaluate``; returns 1 on bad input under ``--strict``."""
    for name in ("generated", "ground_truth"):
        folder = getattr(args, name)
        if not folder.is_dir():
            print(f"error: --{name.replace('_', '-')} {folder} is not a directory",
                  file=sys.stderr)
            return 2
    try:
        report, problems = evaluate(args)
    except DataFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    output = args.output or args.generated.resolve().parent / "metrics.json"
    if problems.count():
        print(f"\n{problems.count()} problem(s):\n{problems.summary()}", file=sys.stderr)
    if report["scored"] == 0:
        print(f"error: 0 of {report['samples']} samples scored: no generated frame paired with "
              f"its ground truth (see the problems above); nothing written", file=sys.stderr)
        return 1
    # The figures go to the terminal before any file is written: a failed write loses nothing.
    print(f"\n{report['scored']} of {report['samples']} samples scored "
          f"({report['protocol']['name']} protocol)\n")
    print(markdown_table(report["metrics"]))
    if report["skipped"]:
        print("\nskipped: " + ", ".join(sorted(report["skipped"])))
    if problems.count() and args.strict:
        print(f"error: bad input (--strict): {output} not written", file=sys.stderr)
        return 1
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as err:
        print(f"error: cannot write {output} ({err}); the full result follows as JSON",
              file=sys.stderr)
        print(json.dumps(report, indent=2))
        return 1
    print(f"\nwrote {output}")
    return 0
