"""Rendering of SynthEgo frames with crisp palette colours (no anti-aliasing).

Crisp colours keep every object, hand and sleeve separable by colour, which the SynthEgo
action score relies on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lego.synthego.scene import REST, Action, Scene, SceneObject

Point = tuple[float, float]
RGB = tuple[int, int, int]
Box = list[int]

STREAM_RGB: RGB = (235, 240, 250)
BLADE_RGB: RGB = (215, 215, 222)


def _shade(rgb: Sequence[int], factor: float) -> RGB:
    return tuple(int(np.clip(round(c * factor), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _light(rgb: Sequence[int], amount: float = 0.45) -> RGB:
    return tuple(int(round(c + (255 - c) * amount)) for c in rgb)  # type: ignore[return-value]


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 2 * math.pi
) -> list[Point]:
    n = 28
    return [
        (
            cx + rx * math.cos(start + (end - start) * i / n),
            cy + ry * math.sin(start + (end - start) * i / n),
        )
        for i in range(n + 1)
    ]


def _rect(cx: float, cy: float, w: float, h: float) -> list[Point]:
    return [
        (cx - w / 2, cy - h / 2),
        (cx + w / 2, cy - h / 2),
        (cx + w / 2, cy + h / 2),
        (cx - w / 2, cy + h / 2),
    ]


def object_shapes(obj: SceneObject) -> list[tuple[list[Point], RGB]]:
    """Polygons (in the object's local frame, unrotated) and colours of an object."""
    r, c = obj.size, obj.rgb
    dark, light = _shade(c, 0.55), _light(c)
    kind, state = obj.kind, obj.state
    if state == "split" and kind in ("bread", "onion"):
        rx, ry = (1.25 * r, 0.8 * r) if kind == "bread" else (0.95 * r, 0.95 * r)
        gap = 0.35 * r
        return [
            (_ellipse(-gap, 0, rx, ry, math.pi / 2, 3 * math.pi / 2), c),
            (_ellipse(gap, 0, rx, ry, -math.pi / 2, math.pi / 2), c),
            (_rect(-gap - 0.06 * r, 0, 0.12 * r, 1.6 * ry), light),
            (_rect(gap + 0.06 * r, 0, 0.12 * r, 1.6 * ry), light),
        ]
    if kind == "cup":
        return [
            (_ellipse(1.05 * r, 0, 0.32 * r, 0.32 * r), c),
            (_ellipse(0, 0, r, r), c),
            (_ellipse(0, 0, 0.6 * r, 0.6 * r), dark),
        ]
    if kind == "bowl":
        return [(_ellipse(0, 0, 1.3 * r, 0.9 * r), c), (_ellipse(0, 0, r, 0.65 * r), light)]
    if kind == "knife":
        return [
            (_rect(0.45 * r, 0, 1.7 * r, 0.3 * r), BLADE_RGB),
            (_rect(-0.8 * r, 0, 0.9 * r, 0.38 * r), c),
        ]
    if kind == "bread":
        return [
            (_ellipse(0, 0, 1.35 * r, 0.85 * r), _shade(c, 0.75)),
            (_ellipse(0, 0, 1.15 * r, 0.68 * r), c),
        ]
    if kind == "box":
        if state == "open":
            return [
                (_rect(0, -1.45 * r, 1.8 * r, 0.9 * r), light),
                (_rect(0, 0, 1.8 * r, 1.8 * r), c),
                (_rect(0, 0.1 * r, 1.5 * r, 1.45 * r), _shade(c, 0.35)),
            ]
        return [
            (_rect(0, 0, 1.8 * r, 1.8 * r), c),
            (_rect(0, -0.35 * r, 1.8 * r, 0.14 * r), _shade(c, 0.7)),
        ]
    if kind == "bottle":
        return [
            (_rect(0, 0.2 * r, 0.75 * r, 1.7 * r), c),
            (_rect(0, -0.85 * r, 0.32 * r, 0.5 * r), c),
            (_rect(0, -1.15 * r, 0.38 * r, 0.2 * r), _shade(c, 0.6)),
        ]
    if kind == "onion":
        return [
            (_ellipse(0, 0, 0.95 * r, 0.95 * r), c),
            ([(-0.18 * r, -0.8 * r), (0.18 * r, -0.8 * r), (0, -1.4 * r)], dark),
            (_rect(0, 0.05 * r, 0.1 * r, 1.3 * r), light),
        ]
    raise ValueError(f"unknown object type {kind!r}")


def mouth(obj: SceneObject) -> Point:
    """Local position of a container's opening."""
    return (0.0, -1.25 * obj.size) if obj.kind == "bottle" else (0.0, -obj.size)


@dataclass
class Canvas:
    """A frame being drawn: maps scene coordinates through the camera to pixels."""

    scene: Scene
    width: int
    height: int

    def __post_init__(self) -> None:
        self.image = Image.new("RGB", (self.width, self.height), self.scene.table_rgb)
        self.draw = ImageDraw.Draw(self.image)

    def to_pixels(self, points: Sequence[Point]) -> list[Point]:
        """Scene points -> pixel coordinates."""
        out = []
        for x, y in points:
            u, v = self.scene.camera.apply(x, y)
            out.append((u * self.width, v * self.height))
        return out

    def polygon(self, points: Sequence[Point], rgb: RGB) -> Box:
        """Fill a polygon given in scene coordinates; returns its pixel bounding box."""
        pix = self.to_pixels(points)
        self.draw.polygon(pix, fill=rgb)
        xs, ys = [p[0] for p in pix], [p[1] for p in pix]
        return [
            max(0, math.floor(min(xs))),
            max(0, math.floor(min(ys))),
            min(self.width, math.ceil(max(xs))),
            min(self.height, math.ceil(max(ys))),
        ]


def _place(obj: SceneObject, points: Sequence[Point]) -> list[Point]:
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    return [(obj.x + c * px - s * py, obj.y + s * px + c * py) for px, py in points]


def _union(boxes: Sequence[Box]) -> Box:
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def draw_background(canvas: Canvas) -> None:
    """Table (with its texture) and the wall at the top of the frame."""
    scene = canvas.scene
    alt = _shade(scene.table_rgb, 0.88)
    if scene.texture == "stripes":
        for i in range(-4, 16):
            x0 = i * 0.09
            canvas.polygon([(x0, -0.5), (x0 + 0.045, -0.5), (x0 + 0.045, 1.5), (x0, 1.5)], alt)
    elif scene.texture == "checker":
        for i in range(-3, 12):
            for j in range(-3, 12):
                if (i + j) % 2:
                    canvas.polygon(_rect(i * 0.12, j * 0.12, 0.12, 0.12), alt)
    canvas.polygon([(-0.5, -0.5), (1.5, -0.5), (1.5, 0.17), (-0.5, 0.17)], scene.wall_rgb)
    if scene.texture == "noise":
        rng = np.random.default_rng(scene.texture_seed)
        arr = np.asarray(canvas.image, dtype=np.int16)
        arr = arr + rng.integers(-9, 10, size=arr.shape[:2], dtype=np.int16)[..., None]
        canvas.image.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


def draw_object(canvas: Canvas, obj: SceneObject) -> Box:
    """Draw an object; returns its pixel bounding box."""
    boxes = []
    if obj.state == "lifted":
        shadow = _ellipse(obj.x, obj.y + 0.05, obj.size, 0.7 * obj.size)
        canvas.polygon(shadow, _shade(canvas.scene.table_rgb, 0.6))
    for points, rgb in object_shapes(obj):
        boxes.append(canvas.polygon(_place(obj, points), rgb))
    return _union(boxes)


def draw_stream(canvas: Canvas, container: SceneObject, receiver: SceneObject) -> None:
    """A pouring stream from a tilted container's opening into the receiver."""
    ((mx, my),) = _place(container, [mouth(container)])
    tx, ty = receiver.x, receiver.y
    length = math.hypot(tx - mx, ty - my) or 1.0
    nx, ny = -(ty - my) / length * 0.012, (tx - mx) / length * 0.012
    canvas.polygon(
        [(mx + nx, my + ny), (tx + nx, ty + ny), (tx - nx, ty - ny), (mx - nx, my - ny)], STREAM_RGB
    )


def draw_hand(canvas: Canvas, side: str, pos: Point) -> Box:
    """Draw an arm (sleeve) from the bottom edge and a hand whose palm centre is ``pos``."""
    scene = canvas.scene
    rx, _ = REST[side]
    base = (rx + (0.06 if side == "right" else -0.06), 1.25)
    dx, dy = pos[0] - base[0], pos[1] - base[1]
    length = math.hypot(dx, dy) or 1.0
    fx, fy = dx / length, dy / length  # forward
    px, py = -fy, fx  # perpendicular
    w = 0.045
    canvas.polygon(
        [
            (base[0] + px * w, base[1] + py * w),
            (pos[0] + px * w, pos[1] + py * w),
            (pos[0] - px * w, pos[1] - py * w),
            (base[0] - px * w, base[1] - py * w),
        ],
        scene.sleeve_rgb,
    )
    boxes = []
    angle = math.atan2(fy, fx)
    palm = [
        (
            pos[0] + 0.05 * math.cos(t) * math.cos(angle) - 0.055 * math.sin(t) * math.sin(angle),
            pos[1] + 0.05 * math.cos(t) * math.sin(angle) + 0.055 * math.sin(t) * math.cos(angle),
        )
        for t in np.linspace(0, 2 * math.pi, 25)
    ]
    boxes.append(canvas.polygon(palm, scene.skin_rgb))
    for k in (-1.5, -0.5, 0.5, 1.5):
        sx, sy = pos[0] + fx * 0.04 + px * 0.017 * k, pos[1] + fy * 0.04 + py * 0.017 * k
        ex, ey = sx + fx * 0.045, sy + fy * 0.045
        boxes.append(
            canvas.polygon(
                [
                    (sx + px * 0.007, sy + py * 0.007),
                    (ex + px * 0.007, ey + py * 0.007),
                    (ex - px * 0.007, ey - py * 0.007),
                    (sx - px * 0.007, sy - py * 0.007),
                ],
                scene.skin_rgb,
            )
        )
    inward = 1.0 if side == "left" else -1.0  # thumbs point to the body's centre
    tx, ty = (
        pos[0] + px * 0.05 * inward * (1 if fy < 0 else -1),
        pos[1] + py * 0.05 * inward * (1 if fy < 0 else -1),
    )
    boxes.append(canvas.polygon(_rect(tx, ty, 0.03, 0.03), scene.skin_rgb))
    return _union(boxes)


def render(
    scene: Scene, action: Action | None, width: int, height: int
) -> tuple[Image.Image, dict]:
    """Render the input frame (``action`` None) or the action frame of ``action``.

    Args:
        scene: The scene.
        action: The action whose result is shown, or None for the input frame.
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        The RGB frame and its layout: pixel boxes ``[x0, y0, x1, y1]`` of every object
        (``objects``, in scene order) and of both hands (``hands``).
    """
    canvas = Canvas(scene, width, height)
    draw_background(canvas)
    objects = action.after if action is not None else scene.objects
    held = {action.target, action.tool} if action is not None else set()
    boxes: dict[int, Box] = {}
    for i, obj in enumerate(objects):
        if i not in held:
            boxes[i] = draw_object(canvas, obj)
    for i in sorted(held - {None}):  # type: ignore[operator]
        boxes[i] = draw_object(canvas, objects[i])
    if action is not None and action.verb == "pour" and action.receiver is not None:
        draw_stream(canvas, objects[action.target], objects[action.receiver])
    hands = {}
    for side, rest in REST.items():
        pos = action.hand_pos if action is not None and side == action.hand else rest
        hands[side] = draw_hand(canvas, side, pos)
    layout = {"objects": [boxes[i] for i in range(len(objects))], "hands": hands}
    return canvas.image, layout
