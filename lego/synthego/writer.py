"""Write a SynthEgo dataset in the EgoGen release layout: parallel, deterministic, resumable."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from tqdm.auto import tqdm

from lego.data.narration import clean_ego4d_narration
from lego.synthego import world
from lego.synthego.render import render
from lego.synthego.scene import Camera, make_action, make_scene

NAME = "synthego"
FRAMES_SUBDIR = "synthego"
CLIPS_PER_CHUNK = 32
#: 2: object records carry their ``place`` on the table (the words the descriptions use).
FORMAT_VERSION = 2
LabelStyle = Literal["ego4d", "plain"]


@dataclass(frozen=True)
class Settings:
    """Everything that determines the generated files."""

    train: int
    val: int
    size: int
    width: int
    seed: int
    actions_per_clip: int
    label_style: LabelStyle
    version: int = FORMAT_VERSION


def clip_id(split: str, clip: int) -> str:
    """The clip id of clip ``clip`` of ``split`` (unique across splits)."""
    return f"{split}_{clip:05d}"


def frame_names(action: int) -> tuple[str, str]:
    """File names of the input and action frames; the input frame sorts first."""
    t0 = 100 * action + 10
    return f"frame_{t0:05d}.png", f"frame_{t0 + 45:05d}.png"


def _atomic_save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG", optimize=False)
    os.replace(tmp, path)


def _object_meta(obj: Any, box: list[int], camera: Camera) -> dict[str, Any]:
    return {
        "type": obj.kind,
        "noun_id": world.NOUN_IDS[obj.kind],
        "colour": obj.colour,
        "rgb": list(obj.rgb),
        "box": box,
        "state": obj.state,
        "place": world.place_name(*camera.apply(obj.x, obj.y)),
    }


def render_chunk(out: Path, settings: Settings, split: str, clips: list[tuple[int, int]]) -> dict:
    """Render the clips of one chunk, write their frames and return their records and metadata.

    Args:
        out: Dataset root.
        settings: Generation settings.
        split: ``train`` or ``val``.
        clips: ``(clip index, number of actions)`` pairs.

    Returns:
        ``{"records": {clip: {action: record}}, "metadata": {clip: ...}}`` for the chunk.
    """
    frames = out / "EgoGen" / FRAMES_SUBDIR
    height, width = settings.size, settings.width
    records: dict[str, dict[str, Any]] = {}
    metadata: dict[str, Any] = {}
    for clip, n_actions in clips:
        cid = clip_id(split, clip)
        scene = make_scene(settings.seed, split, clip)
        image_0, layout_0 = render(scene, None, width, height)
        meta: dict[str, Any] = {
            "height": height,
            "width": width,
            "split": split,
            "skin_rgb": list(scene.skin_rgb),
            "sleeve_rgb": list(scene.sleeve_rgb),
            "table_rgb": list(scene.table_rgb),
            "objects": [
                _object_meta(o, b, scene.camera)
                for o, b in zip(scene.objects, layout_0["objects"], strict=True)
            ],
            "hands": layout_0["hands"],
            "actions": {},
        }
        records[cid] = {}
        for a in range(n_actions):
            aid = f"a{a}"
            action = make_action(scene, settings.seed, split, clip, a)
            image_1, layout_1 = render(scene, action, width, height)
            name_0, name_1 = frame_names(a)
            rel_0, rel_1 = f"{cid}/{aid}/{name_0}", f"{cid}/{aid}/{name_1}"
            _atomic_save(image_0, frames / split / rel_0)
            _atomic_save(image_1, frames / split / rel_1)
            if split == "val":
                _atomic_save(image_1, frames / "val_gt_for_metric" / rel_1)
            label = action.label if settings.label_style == "ego4d" else action.clean
            records[cid][aid] = {
                "image_0": rel_0,
                "image_1": rel_1,
                "action": label,
                "oracle_description": action.description,
            }
            u, v = scene.camera.apply(*action.hand_pos)
            target = scene.objects[action.target]
            meta["actions"][aid] = {
                "verb": action.verb,
                "verb_id": world.VERB_IDS[action.verb],
                "noun": target.kind,
                "noun_id": world.NOUN_IDS[target.kind],
                "acting_hand": action.hand,
                "target_object": action.target,
                "receiver_object": action.receiver,
                "tool_object": action.tool,
                "hand_position": [round(u * width, 2), round(v * height, 2)],
                "objects": [
                    _object_meta(o, b, scene.camera)
                    for o, b in zip(action.after, layout_1["objects"], strict=True)
                ],
                "hands": layout_1["hands"],
                "description": action.description,
            }
        metadata[cid] = meta
    return {"records": records, "metadata": metadata}


def _plan(n_pairs: int, per_clip: int) -> list[tuple[int, int]]:
    n_clips = math.ceil(n_pairs / per_clip)
    return [(c, min(per_clip, n_pairs - c * per_clip)) for c in range(n_clips)]


def _chunks(settings: Settings) -> Iterator[tuple[str, int, list[tuple[int, int]]]]:
    for split, n in (("train", settings.train), ("val", settings.val)):
        plan = _plan(n, settings.actions_per_clip)
        for k in range(0, len(plan), CLIPS_PER_CHUNK):
            yield split, k // CLIPS_PER_CHUNK, plan[k : k + CLIPS_PER_CHUNK]


def _run_chunk(args: tuple[Path, Settings, str, int, list[tuple[int, int]]]) -> int:
    out, settings, split, index, clips = args
    part = render_chunk(out, settings, split, clips)
    path = out / ".synthego_parts" / f"{split}_{index:05d}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(part))
    os.replace(tmp, path)
    return sum(n for _, n in clips)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def generate(
    out: Path,
    train: int = 2000,
    val: int = 200,
    size: int = 64,
    aspect: float = 1.0,
    seed: int = 0,
    workers: int | None = None,
    actions_per_clip: int = 2,
    label_style: LabelStyle = "ego4d",
    progress: bool = True,
) -> dict[str, int]:
    """Generate a SynthEgo dataset under ``out`` (resumable: finished chunks are kept).

    Args:
        out: Dataset root (created).
        train: Number of train pairs.
        val: Number of val pairs.
        size: Frame height in pixels.
        aspect: Frame width / height (1.0 square; 16/9 like the release).
        seed: Dataset seed: the same seed gives byte-identical files.
        workers: Worker processes (default: all cores).
        actions_per_clip: Actions (pairs) per clip; all actions of a clip share its scene.
        label_style: ``ego4d`` narrations (``#C C picks up the cup``) or ``plain`` labels.
        progress: Show a progress bar.

    Returns:
        Counts: ``{"train": ..., "val": ..., "rendered": ...}``.

    Raises:
        ValueError: On invalid sizes, or if ``out`` holds a dataset made with other settings.
    """
    if train < 1 or val < 1:
        raise ValueError("train and val must be at least 1")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if actions_per_clip < 1:
        raise ValueError("actions_per_clip must be at least 1")
    out = Path(out)
    settings = Settings(
        train, val, size, max(16, round(size * aspect)), seed, actions_per_clip, label_style
    )
    parts = out / ".synthego_parts"
    parts.mkdir(parents=True, exist_ok=True)
    settings_file = parts / "settings.json"
    if settings_file.exists():
        previous = json.loads(settings_file.read_text())
        if previous != asdict(settings):
            raise ValueError(
                f"{out} holds a SynthEgo dataset generated with other settings ({previous}); "
                "choose another --out or delete it"
            )
    else:
        _write_json(settings_file, asdict(settings))
    chunks = list(_chunks(settings))
    todo = [
        (out, settings, split, index, clips)
        for split, index, clips in chunks
        if not (parts / f"{split}_{index:05d}.json").exists()
    ]
    total = sum(n for *_, clips in todo for _, n in clips)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with tqdm(total=total, desc="SynthEgo pairs", unit="pair", disable=not progress) as bar:
        if workers == 1:
            for job in todo:
                bar.update(_run_chunk(job))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(_run_chunk, todo):
                    bar.update(done)
    counts = {"train": 0, "val": 0, "rendered": total}
    metadata: dict[str, Any] = {}
    for split in ("train", "val"):
        records: dict[str, Any] = {}
        for s, index, _ in chunks:
            if s != split:
                continue
            part = json.loads((parts / f"{split}_{index:05d}.json").read_text())
            records.update(part["records"])
            metadata.update(part["metadata"])
        counts[split] = sum(len(v) for v in records.values())
        _write_json(out / f"{NAME}_{split}.json", records)
        if split == "train":
            _write_json(
                out / "curation_from_gpt" / f"{NAME}_for_tuning_forecasting.json",
                [
                    {
                        "id": f"{cid}_{aid}",
                        "image": rec["image_0"],
                        "conversations": [
                            {
                                "from": "human",
                                "value": "<image>\n"
                                + world.QUERY.format(clean_ego4d_narration(rec["action"])),
                            },
                            {"from": "gpt", "value": rec["oracle_description"]},
                        ],
                    }
                    for cid, actions in records.items()
                    for aid, rec in actions.items()
                ],
            )
    _write_json(out / f"{NAME}_metadata.json", metadata)
    return counts


def reset(out: Path) -> None:
    """Delete a generated dataset (frames, records, metadata and resume state)."""
    for path in (
        out / "EgoGen" / FRAMES_SUBDIR,
        out / ".synthego_parts",
        out / "curation_from_gpt",
    ):
        shutil.rmtree(path, ignore_errors=True)
    for name in ("train", "val", "metadata"):
        (out / f"{NAME}_{name}.json").unlink(missing_ok=True)
