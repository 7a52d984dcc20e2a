"""Writers of small EgoGen-format datasets (official field names, nested JSON, 16:9 frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

NARRATIONS = [
    "#C C picks up the knife",
    "#C C washes the plate",
    "#C C cuts the onion",
    "#C C opens the fridge",
    "#C C carries a bag",
    "#C C touches the cup",
]


def frame(seed: int, size: tuple[int, int] = (64, 36)) -> Image.Image:
    """A deterministic 16:9 RGB frame (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def write_egogen(
    root: Path,
    name: str = "ego4d",
    frames_subdir: str = "ego4d.fho",
    n_clips: int = 3,
    actions_per_clip: int = 2,
    labels: list[str] | None = None,
    with_description: bool = True,
    ext: str = "jpg",
) -> dict[str, dict[str, dict]]:
    """Write ``<name>_train.json``/``_val.json``, frames, metadata and curated conversations."""
    labels = labels or NARRATIONS
    all_records = {}
    k = 0
    for split in ("train", "val"):
        records: dict[str, dict[str, dict]] = {}
        for c in range(n_clips):
            clip = f"{split}-clip-{c:03d}"
            records[clip] = {}
            for a in range(actions_per_clip):
                action = f"{a * 7 + 3}"
                rel0 = f"{clip}/{action}/{clip}_{100 + a:06d}.{ext}"
                rel1 = f"{clip}/{action}/{clip}_{200 + a:06d}.{ext}"
                for rel, seed in ((rel0, 2 * k), (rel1, 2 * k + 1)):
                    path = root / "EgoGen" / frames_subdir / split / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    frame(seed).save(path, quality=95) if ext == "jpg" else frame(seed).save(path)
                rec = {"image_0": rel0, "image_1": rel1, "action": labels[k % len(labels)]}
                if with_description:
                    rec["llava_forecast_finetune"] = f"Detailed description {k}."
                records[clip][action] = rec
                k += 1
        (root / f"{name}_{split}.json").write_text(json.dumps(records, indent=1))
        all_records[split] = records
    meta = {clip: {"height": 1080, "width": 1920} for s in all_records.values() for clip in s}
    (root / f"{name}_metadata.json").write_text(json.dumps(meta))
    curated = [
        {
            "id": f"{clip}_{action}",
            "image": rec["image_0"],
            "conversations": [
                {"from": "human", "value": f"<image>\nHow does the person properly {clip}?"},
                {"from": "gpt", "value": f"Answer for {clip}/{action}."},
            ],
        }
        for clip, actions in all_records["train"].items()
        for action, rec in actions.items()
    ]
    cur = root / "curation_from_gpt" / f"{name}_for_tuning_forecasting.json"
    cur.parent.mkdir(parents=True, exist_ok=True)
    cur.write_text(json.dumps(curated))
    return all_records
