"""SynthEgo action score: where did the generated frame put the acting hand?

SynthEgo scenes are known (``synthego_metadata.json``), and the renderer paints hands in a flat
skin colour that no object or background uses. The acting hand is found by colour segmentation:
pixels within ``tolerance`` of the scene's ``skin_rgb``, minus the region where the other hand
rests, keep their largest connected component; its centroid is the hand's position. Two numbers:

* ``hand_error``: distance in pixels (at the metadata frame size) between the acting hand found
  in the generated frame and the one found in the ground-truth action frame (the frame diagonal
  when the generated frame shows no acting hand);
* ``hand_hit``: percentage of frames whose acting hand is at the target object - inside its box
  in the action frame grown by ``margin`` x the frame size, or within ``margin`` x the frame size
  of the true hand position (a push acts from behind the object) - while the other hand stays
  at rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ActionTruth:
    """What the metadata says about one action frame.

    Attributes:
        height: Frame height of the metadata coordinates.
        width: Frame width of the metadata coordinates.
        skin_rgb: Skin colour of the hands.
        acting_hand: ``left`` or ``right``.
        other_box: Box ``[x0, y0, x1, y1]`` of the non-acting (resting) hand in the action frame.
        target_box: Box of the target object in the action frame.
    """

    height: int
    width: int
    skin_rgb: tuple[int, int, int]
    acting_hand: str
    other_box: Box
    target_box: Box

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], sample_id: str) -> ActionTruth:
        """Read the truth of sample ``"<clip>/<action>"`` from a SynthEgo metadata dict.

        Raises:
            KeyError: If the clip, the action or a field is missing (the message names them).
        """
        clip_id, _, action_id = sample_id.partition("/")
        try:
            clip = metadata[clip_id]
            action = clip["actions"][action_id]
            hand = action["acting_hand"]
            other = "left" if hand == "right" else "right"
            return cls(
                height=int(clip["height"]),
                width=int(clip["width"]),
                skin_rgb=tuple(int(c) for c in clip["skin_rgb"]),  # type: ignore[arg-type]
                acting_hand=hand,
                other_box=tuple(float(v) for v in action["hands"][other]),  # type: ignore[arg-type]
                target_box=tuple(  # type: ignore[arg-type]
                    float(v) for v in action["objects"][int(action["target_object"])]["box"]
                ),
            )
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise KeyError(
                f"SynthEgo metadata has no complete scene record for {sample_id!r} ({err!r})"
            ) from err


def skin_mask(frame: Tensor, skin_rgb: tuple[int, int, int], tolerance: float) -> np.ndarray:
    """Pixels of a ``3 x H x W`` [0, 1] frame within ``tolerance`` (0-255 units, per channel)."""
    rgb = torch.tensor(skin_rgb, dtype=torch.float32, device=frame.device).view(3, 1, 1)
    diff = (frame.float() * 255.0 - rgb).abs().amax(dim=0)
    return (diff <= tolerance).cpu().numpy()


def _scaled_box(box: Box, sx: float, sy: float, grow: float = 0.0) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (int(math.floor(x0 * sx - grow)), int(math.floor(y0 * sy - grow)),
            int(math.ceil(x1 * sx + grow)), int(math.ceil(y1 * sy + grow)))


def locate_hands(
    frame: Tensor, truth: ActionTruth, tolerance: float
) -> tuple[tuple[float, float] | None, float]:
    """Find the acting hand and measure how much of the other hand is at rest.

    Args:
        frame: ``3 x H x W`` frame in [0, 1] (any size; coordinates are returned at the
            metadata size).
        truth: The action's metadata.
        tolerance: Colour tolerance.

    Returns:
        ``(x, y)`` of the acting hand at metadata scale (None if not found), and the fraction of
        the resting hand's box covered by skin.
    """
    mask = skin_mask(frame, truth.skin_rgb, tolerance)
    h, w = mask.shape
    sx, sy = w / truth.width, h / truth.height
    x0, y0, x1, y1 = _scaled_box(truth.other_box, sx, sy)
    region = mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]
    rest_cover = float(region.mean()) if region.size else 0.0
    gx0, gy0, gx1, gy1 = _scaled_box(truth.other_box, sx, sy, grow=0.05 * max(h, w))
    acting = mask.copy()
    acting[max(gy0, 0):max(gy1, 0), max(gx0, 0):max(gx1, 0)] = False
    labels, count = ndimage.label(acting)
    if count == 0:
        return None, rest_cover
    sizes = ndimage.sum_labels(acting, labels, index=np.arange(1, count + 1))
    largest = int(np.argmax(sizes)) + 1
    ys, xs = np.nonzero(labels == largest)
    return ((xs.mean() + 0.5) / sx, (ys.mean() + 0.5) / sy), rest_cover


class SynthEgoActionScore(Metric):
    """Hand-placement error and correct-hand-at-object rate on SynthEgo frames.

    ``compute`` returns ``{"hand_error": pixels, "hand_hit": percent}``.

    Args:
        metadata: The parsed ``synthego_metadata.json``.
        tolerance: Skin colour tolerance per channel (0-255).
        margin: Growth of the target-object box and radius around the true hand position, as a
            fraction of the frame size.
        rest_cover: Minimum fraction of the resting hand's box that must stay skin-coloured
            (relative to the ground-truth frame's own cover).
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        metadata: dict[str, Any],
        tolerance: float = 24.0,
        margin: float = 0.1,
        rest_cover: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metadata = metadata
        self.tolerance = tolerance
        self.margin = margin
        self.rest_cover = rest_cover
        for name in ("error_sum", "hits", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64),
                           dist_reduce_fx="sum")

    def score(self, pred: Tensor, target: Tensor, sample_id: str) -> tuple[float, bool]:
        """Placement error (pixels) and hit of one generated frame against its ground truth."""
        truth = ActionTruth.from_metadata(self.metadata, sample_id)
        diagonal = math.hypot(truth.width, truth.height)
        ref, ref_cover = locate_hands(target, truth, self.tolerance)
        pos, cover = locate_hands(pred, truth, self.tolerance)
        if pos is None:
            return diagonal, False
        if ref is None:  # should not happen on SynthEgo ground truth; fall back to the box
            x0, y0, x1, y1 = truth.target_box
            ref = ((x0 + x1) / 2, (y0 + y1) / 2)
        error = math.hypot(pos[0] - ref[0], pos[1] - ref[1])
        grow = self.margin * max(truth.width, truth.height)
        x0, y0, x1, y1 = truth.target_box
        on_object = (x0 - grow <= pos[0] <= x1 + grow and y0 - grow <= pos[1] <= y1 + grow) or (
            error <= grow
        )
        at_rest = cover >= self.rest_cover * ref_cover
        return error, bool(on_object and at_rest)

    def update(self, preds: Tensor, target: Tensor, sample_ids: list[str]) -> None:
        """Score ``B x 3 x H x W`` generated frames against ground truth (both in [0, 1]).

        Raises:
            ValueError: If the numbers of frames and ids differ.
        """
        if len(sample_ids) != preds.shape[0] or target.shape[0] != preds.shape[0]:
            raise ValueError(f"{preds.shape[0]} frames, {target.shape[0]} targets, "
                             f"{len(sample_ids)} sample ids")
        for pred, tgt, sid in zip(preds, target, sample_ids, strict=True):
            error, hit = self.score(pred, tgt, sid)
            self.error_sum += error
            self.hits += float(hit)
            self.count += 1

    def compute(self) -> dict[str, Tensor]:
        """``{"hand_error": mean pixels, "hand_hit": percent}``."""
        n = self.count.clamp_min(1)
        return {"hand_error": (self.error_sum / n).float(),
                "hand_hit": (self.hits / n * 100.0).float()}
