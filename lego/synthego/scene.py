"""SynthEgo scenes and actions as pure functions of (seed, split, clip index, action index).

Coordinates are normalised to the frame before camera jitter: ``x`` left to right, ``y`` top to
bottom, both in [0, 1]. The renderer applies the scene's camera jitter to every point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from lego.synthego import world

SPLIT_CODES = {"train": 0, "val": 1}
REST = {"left": (0.28, 0.93), "right": (0.72, 0.93)}


@dataclass(frozen=True)
class SceneObject:
    """An object on the table."""

    kind: str
    colour: str
    x: float
    y: float
    size: float
    angle: float
    state: str = "rest"  # rest | lifted | split | open | tilted

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The object's colour."""
        return world.COLOURS[self.colour]


@dataclass(frozen=True)
class Camera:
    """Camera jitter shared by the two frames of a scene."""

    dx: float
    dy: float
    rotation: float  # radians
    scale: float

    def apply(self, x: float, y: float) -> tuple[float, float]:
        """Map a scene point to normalised frame coordinates."""
        u, v = (x - 0.5) * self.scale, (y - 0.5) * self.scale
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return 0.5 + c * u - s * v + self.dx, 0.5 + s * u + c * v + self.dy


@dataclass(frozen=True)
class Scene:
    """A table top with objects, two resting hands and a camera."""

    table_rgb: tuple[int, int, int]
    wall_rgb: tuple[int, int, int]
    texture: str
    texture_seed: int
    skin_rgb: tuple[int, int, int]
    sleeve_rgb: tuple[int, int, int]
    camera: Camera
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True)
class Action:
    """An action on a scene: what changes between the input and the action frame."""

    verb: str
    target: int  # index of the acted-on object
    hand: str  # left | right
    label: str  # Ego4D-style narration
    clean: str  # cleaned label
    description: str  # true detailed description
    after: tuple[SceneObject, ...]  # objects in the action frame
    hand_pos: tuple[float, float]  # palm centre of the acting hand in the action frame (scene)
    receiver: int | None = None  # pour: index of the receiving object
    tool: int | None = None  # cut: index of the knife
    extras: dict[str, float] = field(default_factory=dict)


def scene_rng(seed: int, split: str, clip: int, action: int | None = None) -> np.random.Generator:
    """The random generator of one scene (``action`` None) or one of its actions."""
    key = [seed, SPLIT_CODES.get(split, sum(map(ord, split))), clip]
    if action is not None:
        key.append(1000 + action)
    return np.random.default_rng(key)


def make_scene(seed: int, split: str, clip: int) -> Scene:
    """Build the scene of clip ``clip`` of ``split``: a pure function of its arguments.

    Args:
        seed: The dataset seed.
        split: ``train`` or ``val``.
        clip: Index of the clip (one scene per clip).

    Returns:
        The scene.
    """
    rng = scene_rng(seed, split, clip)
    table = world.TABLES[rng.integers(len(world.TABLES))]
    wall = tuple(int(np.clip(c * rng.uniform(0.6, 0.8), 0, 255)) for c in table)
    n_objects = int(rng.integers(3, 6))
    kinds = rng.choice(len(world.OBJECT_TYPES), size=n_objects, replace=False)
    colours = [list(world.COLOURS)[i] for i in rng.permutation(len(world.COLOURS))]
    objects: list[SceneObject] = []
    for kind_index in kinds:
        kind = world.OBJECT_TYPES[int(kind_index)]
        size = float(rng.uniform(0.08, 0.1))
        for _ in range(200):
            x, y = float(rng.uniform(0.14, 0.86)), float(rng.uniform(0.28, 0.62))
            if abs(x - 0.5) < 0.05:
                continue  # keep the acting-hand rule unambiguous
            if all(math.hypot(x - o.x, y - o.y) > 2.3 * max(size, o.size) for o in objects):
                break
        else:
            continue
        angle = float(rng.uniform(-0.7, 0.7) if kind == "knife" else rng.uniform(-0.3, 0.3))
        colour = colours[len(objects)]
        objects.append(SceneObject(kind, colour, x, y, size, angle))
    camera = Camera(
        dx=float(rng.uniform(-0.025, 0.025)),
        dy=float(rng.uniform(-0.02, 0.02)),
        rotation=float(rng.uniform(-0.06, 0.06)),
        scale=float(rng.uniform(0.95, 1.05)),
    )
    return Scene(
        table_rgb=table,
        wall_rgb=wall,  # type: ignore[arg-type]
        texture=world.TEXTURES[int(rng.integers(len(world.TEXTURES)))],
        texture_seed=int(rng.integers(2**31)),
        skin_rgb=world.SKIN_TONES[int(rng.integers(len(world.SKIN_TONES)))],
        sleeve_rgb=world.SLEEVES[int(rng.integers(len(world.SLEEVES)))],
        camera=camera,
        objects=tuple(objects),
    )


def feasible_actions(scene: Scene) -> list[tuple[str, int, int | None]]:
    """All (verb, target, second object) actions the scene allows."""
    kinds = {o.kind: i for i, o in enumerate(scene.objects)}
    options: list[tuple[str, int, int | None]] = []
    for i, obj in enumerate(scene.objects):
        if obj.kind != "knife":
            options.append(("pick up", i, None))
        options.append(("push", i, None))
        if obj.kind in world.CUTTABLE and "knife" in kinds:
            options.append(("cut", i, kinds["knife"]))
        if obj.kind == "box":
            options.append(("open", i, None))
        if obj.kind in world.CONTAINERS:
            for receiver in world.RECEIVERS:
                if receiver in kinds and kinds[receiver] != i:
                    options.append(("pour", i, kinds[receiver]))
    return options


def make_action(scene: Scene, seed: int, split: str, clip: int, index: int) -> Action:
    """Choose and apply action ``index`` of a clip: a pure function of its arguments.

    The verb is drawn uniformly among the verbs the scene allows, then the object. Actions of
    the same clip differ (they are drawn without replacement from the feasible set, cycling when
    exhausted).

    Args:
        scene: The clip's scene.
        seed: The dataset seed.
        split: ``train`` or ``val``.
        clip: Clip index.
        index: Action index within the clip.

    Returns:
        The action.
    """
    options = feasible_actions(scene)
    order_rng = scene_rng(seed, split, clip, action=-1)
    by_verb: dict[str, list[tuple[str, int, int | None]]] = {}
    for option in options:
        by_verb.setdefault(option[0], []).append(option)
    verbs = sorted(by_verb)
    # A clip-level permutation of verbs, so actions of one clip use different verbs first.
    verb_order = [verbs[i] for i in order_rng.permutation(len(verbs))]
    rng = scene_rng(seed, split, clip, action=index)
    verb = verb_order[index % len(verb_order)]
    choices = by_verb[verb]
    verb_name, target, other = choices[int(rng.integers(len(choices)))]
    return apply_action(scene, verb_name, target, other, rng)


def _frame_x(scene: Scene, obj: SceneObject) -> float:
    return scene.camera.apply(obj.x, obj.y)[0]


def apply_action(
    scene: Scene, verb: str, target: int, other: int | None, rng: np.random.Generator
) -> Action:
    """Compute the action frame state of ``verb`` on object ``target``.

    The acting hand is the hand on the object's side of the frame, except for ``cut`` (the
    knife is always held in the right hand).
    """
    objects = list(scene.objects)
    obj = objects[target]
    hand = "left" if _frame_x(scene, obj) < 0.5 else "right"
    extras: dict[str, float] = {}
    receiver = tool = None
    if verb == "pick up":
        objects[target] = replace(obj, y=obj.y - 0.05, size=obj.size * 1.2, state="lifted")
        hand_pos = (obj.x, obj.y - 0.05 + 0.7 * obj.size)
    elif verb == "push":
        objects[target] = replace(obj, y=max(0.2, obj.y - 0.12))
        hand_pos = (obj.x, obj.y + 1.4 * obj.size)
    elif verb == "cut":
        hand = "right"
        tool = other
        assert tool is not None
        knife = objects[tool]
        objects[target] = replace(obj, state="split")
        objects[tool] = replace(
            knife, x=obj.x + 0.9 * obj.size, y=obj.y + 0.2 * obj.size, angle=-0.6, state="held"
        )
        hand_pos = (obj.x + 2.0 * obj.size, obj.y + 1.0 * obj.size)
    elif verb == "open":
        objects[target] = replace(obj, state="open")
        hand_pos = (obj.x, obj.y - 1.1 * obj.size)
    elif verb == "pour":
        receiver = other
        assert receiver is not None
        dest = objects[receiver]
        side = 1.0 if dest.x < obj.x else -1.0
        objects[target] = replace(
            obj,
            x=dest.x + side * 1.4 * dest.size,
            y=dest.y - 1.3 * dest.size,
            angle=-side * 1.0,
            state="tilted",
        )
        hand_pos = (dest.x + side * 2.2 * dest.size, dest.y - 0.6 * dest.size)
        extras["side"] = side
    else:
        raise ValueError(f"unknown verb {verb!r}")
    noun = obj.kind
    noun2 = scene.objects[receiver].kind if receiver is not None else None
    fx, fy = scene.camera.apply(obj.x, obj.y)
    template = world.TEMPLATES[verb][int(rng.integers(len(world.TEMPLATES[verb])))]
    description = template.format(
        hand=hand,
        colour=obj.colour,
        noun=noun,
        place=world.place_name(fx, fy),
        tool_colour=scene.objects[tool].colour if tool is not None else "",
        colour2=scene.objects[receiver].colour if receiver is not None else "",
        noun2=noun2 or "",
    )
    return Action(
        verb=verb,
        target=target,
        hand=hand,
        label=world.action_label(verb, noun, noun2),
        clean=world.clean_label(verb, noun, noun2),
        description=description,
        after=tuple(objects),
        hand_pos=hand_pos,
        receiver=receiver,
        tool=tool,
        extras=extras,
    )
