"""Pretraining scenes for the SynthEgo backbones: rendered table tops with their object facts.

The backbones are pretrained on scenes of their own split keys (``zoo-<seed>`` and
``zooval-<seed>``), which no dataset written by ``python -m lego synthego`` uses, so a shipped
backbone has never seen a demo train or val scene. A pool is a pure function of
``(seed, split, count)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lego.synthego import world
from lego.synthego.render import render
from lego.synthego.scene import make_scene


@dataclass(frozen=True)
class ObjectFact:
    """What a scene shows of one object: the words a caption or an answer uses, and its box.

    Attributes:
        kind: Object type (``cup``).
        colour: Colour name (``red``).
        place: Place on the table (``upper right``).
        hand: The hand on the object's side of the frame (``left`` / ``right``).
        box: Pixel box ``[x0, y0, x1, y1]`` in the rendered frame.
    """

    kind: str
    colour: str
    place: str
    hand: str
    box: tuple[int, int, int, int]


@dataclass
class ScenePool:
    """Rendered input frames (``N x 3 x H x W`` uint8) and the facts of their objects."""

    frames: Tensor
    objects: list[tuple[ObjectFact, ...]]

    def __len__(self) -> int:
        return len(self.objects)


def scene_split(seed: int, part: str = "zoo") -> str:
    """The split key of the pretraining scenes (``zoo-<seed>``; ``zooval-<seed>`` to score)."""
    return f"{part}-{seed}"


def render_pool(
    seed: int,
    count: int,
    part: str = "zoo",
    size: int = 64,
    max_objects: int | None = None,
    progress: bool = True,
) -> ScenePool:
    """Render ``count`` input frames of the pretraining split and read their object facts.

    Args:
        seed: The pretraining seed.
        count: Number of scenes.
        part: ``zoo`` (training scenes) or ``zooval`` (held-out scenes for scoring).
        size: Frame side in pixels.
        max_objects: Keep at most this many objects per scene (scene ``i`` keeps
            ``1 + i % max_objects``): the easy scenes of a curriculum. None keeps all (3-5).
        progress: Show a progress bar.

    Returns:
        The pool.
    """
    split = scene_split(seed, part)
    frames, facts = [], []
    for i in tqdm(range(count), desc=f"rendering {split} scenes", disable=not progress):
        scene = make_scene(seed, split, i)
        if max_objects is not None:
            scene = replace(scene, objects=scene.objects[: 1 + i % max_objects])
        image, layout = render(scene, None, size, size)
        frames.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        row = []
        for obj, box in zip(scene.objects, layout["objects"], strict=True):
            x, y = scene.camera.apply(obj.x, obj.y)
            row.append(
                ObjectFact(
                    kind=obj.kind,
                    colour=obj.colour,
                    place=world.place_name(x, y),
                    hand="left" if x < 0.5 else "right",
                    box=tuple(int(v) for v in box),  # type: ignore[arg-type]
                )
            )
        facts.append(tuple(row))
    return ScenePool(torch.stack(frames), facts)


def caption(objects: tuple[ObjectFact, ...]) -> str:
    """The scene's caption: every object with its colour and place, in reading order.

    Example: ``"a green cup at the upper left, a blue onion at the upper right and a red bowl at
    the lower left of the table."``
    """
    rows, columns = list(world.ROWS), list(world.COLUMNS)

    def order(fact: ObjectFact) -> tuple[int, int]:
        row, column = fact.place.split()
        return rows.index(row), columns.index(column)

    parts = [f"a {o.colour} {o.kind} at the {o.place}" for o in sorted(objects, key=order)]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{text} of the table."
