"""SynthEgo description accuracy: does a description name the right hand, object, colour, place?

SynthEgo scenes are known (``synthego_metadata.json``), so a generated action description can be
checked field by field against the scene truth. A description is read into five fields by
:func:`parse_description`:

* ``hand``: the first ``left hand`` / ``right hand`` it names;
* ``object`` and ``colour``: the first ``<colour> <object>`` pair naming the acted-on object (for
  ``cut``, the first pair that is not the knife held in the hand);
* ``place``: the first ``upper|lower left|middle|right`` it names;
* ``verb``: the action its wording expresses (``pour`` / ``tip`` / ``tilt`` > ``cut`` / ``slice``
  > ``open`` / ``lid`` > ``push`` > ``pick`` / ``lift`` / ``raise`` / ``grasp`` / ``grip``).

A field the description does not name counts as wrong. ``all`` is the share of descriptions
with every field right.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lego.synthego import world

#: The scored fields, in report order.
FIELDS: tuple[str, ...] = ("hand", "object", "colour", "place", "verb")

_HAND = re.compile(r"\b(left|right) hand\b")
_PLACE = re.compile(r"\b(upper|lower) (left|middle|right)\b")
_PAIR = re.compile(
    r"\b(" + "|".join(world.COLOURS) + r") (" + "|".join(world.OBJECT_TYPES) + r")\b"
)
#: Verb cues, strongest first (a pour also lifts, an open lifts the lid, a cut holds a knife).
_VERB_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("pour", re.compile(r"\b(pour|pours|tip|tips|tilt|tilts)\b")),
    ("cut", re.compile(r"\b(cut|cuts|slice|slices)\b")),
    ("open", re.compile(r"\b(open|opens|lid)\b")),
    ("push", re.compile(r"\b(push|pushes|pushing)\b")),
    ("pick up", re.compile(r"\b(pick|picks|lift|lifts|raise|raises|grasp|grasps|grip|grips)\b")),
)


@dataclass(frozen=True)
class DescriptionFields:
    """The facts a SynthEgo action description states (``None``: not stated)."""

    hand: str | None = None
    object: str | None = None
    colour: str | None = None
    place: str | None = None
    verb: str | None = None


def parse_description(text: str) -> DescriptionFields:
    """Read the five fields of a SynthEgo action description.

    Args:
        text: A description, e.g. ``"The right hand reaches to the red cup at the upper right
            of the table and lifts it."``.

    Returns:
        The fields it states; the ones it does not state are ``None``.
    """
    lower = text.lower() if isinstance(text, str) else ""
    verb = next((name for name, cue in _VERB_CUES if cue.search(lower)), None)
    pairs = _PAIR.findall(lower)
    if verb == "cut":
        pairs = [p for p in pairs if p[1] != "knife"] or pairs
    colour, noun = pairs[0] if pairs else (None, None)
    hand = _HAND.search(lower)
    place = _PLACE.search(lower)
    return DescriptionFields(
        hand=hand.group(1) if hand else None,
        object=noun,
        colour=colour,
        place=f"{place.group(1)} {place.group(2)}" if place else None,
        verb=verb,
    )


def truth_fields(metadata: dict[str, Any], sample_id: str) -> DescriptionFields:
    """The true fields of sample ``"<clip>/<action>"`` from a SynthEgo metadata dict.

    Args:
        metadata: The parsed ``synthego_metadata.json``.
        sample_id: ``"<clip_id>/<action_id>"``.

    Returns:
        Acting hand, target object type, its colour and place in the input frame, and the verb.

    Raises:
        KeyError: If the clip, the action or a field is missing (the message names them; a
            dataset written before places were recorded must be regenerated).
    """
    clip_id, _, action_id = sample_id.partition("/")
    try:
        clip = metadata[clip_id]
        action = clip["actions"][action_id]
        target = clip["objects"][int(action["target_object"])]
        return DescriptionFields(
            hand=str(action["acting_hand"]),
            object=str(target["type"]),
            colour=str(target["colour"]),
            place=str(target["place"]),
            verb=str(action["verb"]),
        )
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise KeyError(
            f"SynthEgo metadata has no complete record for {sample_id!r} ({err!r}); a dataset "
            "without object places predates description scoring: regenerate it with "
            "`python -m lego synthego`"
        ) from err


def field_hits(predicted: DescriptionFields, truth: DescriptionFields) -> dict[str, bool]:
    """Which fields of a parsed description equal the truth (``all``: every field).

    Args:
        predicted: Fields read from a description.
        truth: The true fields.

    Returns:
        ``{field: hit}`` for :data:`FIELDS` plus ``all``.
    """
    pred, true = asdict(predicted), asdict(truth)
    hits = {name: pred[name] is not None and pred[name] == true[name] for name in FIELDS}
    hits["all"] = all(hits.values())
    return hits


class DescriptionAccuracy(Metric):
    """Per-field accuracy (percent) of SynthEgo action descriptions against the scene truth.

    ``compute`` returns ``{"hand", "object", "colour", "place", "verb", "all"}`` in percent, and
    ``count``, the number of descriptions scored.

    Args:
        metadata: The parsed ``synthego_metadata.json``.
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, metadata: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metadata = metadata
        self.add_state(
            "hits", default=torch.zeros(len(FIELDS) + 1, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, descriptions: list[str], sample_ids: list[str]) -> None:
        """Score descriptions of the given samples.

        Raises:
            ValueError: If the numbers of descriptions and ids differ.
            KeyError: If a sample is not in the metadata.
        """
        if len(descriptions) != len(sample_ids):
            raise ValueError(f"{len(descriptions)} descriptions for {len(sample_ids)} sample ids")
        for text, sample_id in zip(descriptions, sample_ids, strict=True):
            hits = field_hits(parse_description(text), truth_fields(self.metadata, sample_id))
            row = torch.tensor([hits[name] for name in (*FIELDS, "all")], dtype=torch.float64)
            self.hits += row.to(self.hits.device)
            self.count += 1

    def compute(self) -> dict[str, Tensor]:
        """Percent right per field, ``all`` fields right, and the ``count`` of descriptions."""
        n = self.count.clamp_min(1)
        scores = {
            name: (self.hits[i] / n * 100.0).float() for i, name in enumerate((*FIELDS, "all"))
        }
        scores["count"] = self.count.float()
        return scores
