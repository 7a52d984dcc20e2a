"""The SynthEgo world: object types, colours, verbs, places, label and description templates."""

from __future__ import annotations

import re

#: Object types (nouns). Each appears at most once per scene.
OBJECT_TYPES: tuple[str, ...] = ("cup", "bowl", "knife", "bread", "box", "bottle", "onion")

#: Saturated object colours, far from the grey table and the skin tones.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (245, 215, 30),
    "purple": (140, 50, 180),
    "orange": (250, 120, 20),
    "pink": (245, 100, 190),
    "cyan": (30, 200, 210),
}

#: Skin tones of the hands (one per scene).
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (255, 219, 172),
    (241, 194, 125),
    (224, 172, 105),
    (198, 134, 66),
    (141, 85, 36),
)

#: Dark sleeve colours (the arms), so that skin segmentation finds the hands only.
SLEEVES: tuple[tuple[int, int, int], ...] = ((35, 35, 45), (60, 30, 30), (25, 45, 35), (50, 50, 70))

#: Muted table and wall colours.
TABLES: tuple[tuple[int, int, int], ...] = (
    (120, 120, 125),
    (95, 105, 115),
    (150, 150, 140),
    (110, 125, 115),
    (165, 160, 155),
    (85, 90, 100),
)
TEXTURES: tuple[str, ...] = ("plain", "stripes", "checker", "noise")

#: Verbs: (base form, third person form used in narrations).
VERBS: dict[str, str] = {
    "pick up": "picks up",
    "push": "pushes",
    "cut": "cuts",
    "open": "opens",
    "pour": "pours",
}
VERB_IDS = {verb: i for i, verb in enumerate(VERBS)}
NOUN_IDS = {noun: i for i, noun in enumerate(OBJECT_TYPES)}

CUTTABLE = ("bread", "onion")
CONTAINERS = ("bottle", "cup")
RECEIVERS = ("bowl", "cup")

#: The VLM query of the paper, filled with the cleaned action label.
QUERY = "How does the person properly {} that is displayed in the video frame?"

#: Several phrasings per fact, so a VLM learns content rather than a fixed string. Every phrasing
#: names the acting hand (or the knife in the right hand), the object, its colour and place.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "pick up": (
        "The {hand} hand reaches to the {colour} {noun} at the {place} of the table and "
        "lifts it.",
        "Using the {hand} hand, grasp the {colour} {noun} on the {place} of the table and "
        "raise it.",
        "Move the {hand} hand to the {place} of the table, grip the {colour} {noun} and "
        "pick it up.",
    ),
    "push": (
        "The {hand} hand goes behind the {colour} {noun} at the {place} of the table and pushes "
        "it forward.",
        "Place the {hand} hand behind the {colour} {noun} on the {place} of the table and push "
        "it away.",
        "With the {hand} hand, push the {colour} {noun} at the {place} of the table away from you.",
    ),
    "cut": (
        "The right hand holds the {tool_colour} knife over the {colour} {noun} at the {place} of "
        "the table and cuts it in two.",
        "Take the {tool_colour} knife in the right hand and slice the {colour} {noun} on the "
        "{place} of the table.",
        "With the {tool_colour} knife in the right hand, cut the {colour} {noun} at the {place} of "
        "the table into two halves.",
    ),
    "open": (
        "The {hand} hand lifts the lid of the {colour} box at the {place} of the table and "
        "opens it.",
        "Reach the {hand} hand to the {colour} box on the {place} of the table and open its lid.",
        "Use the {hand} hand to open the lid of the {colour} box at the {place} of the table.",
    ),
    "pour": (
        "The {hand} hand lifts the {colour} {noun} at the {place} of the table and tilts it over "
        "the {colour2} {noun2} to pour.",
        "Hold the {colour} {noun} from the {place} of the table in the {hand} hand and pour it "
        "into the {colour2} {noun2}.",
        "With the {hand} hand, tip the {colour} {noun} from the {place} of the table over the "
        "{colour2} {noun2} and pour.",
    ),
}

ROWS = ("upper", "lower")
COLUMNS = ("left", "middle", "right")
PLACES: tuple[str, ...] = tuple(f"{r} {c}" for r in ROWS for c in COLUMNS)


def action_label(verb: str, noun: str, noun2: str | None = None) -> str:
    """The Ego4D-style narration of an action, e.g. ``"#C C picks up the cup"``."""
    label = f"#C C {VERBS[verb]} the {noun}"
    if verb == "pour" and noun2 is not None:
        label += f" into the {noun2}"
    return label


def clean_label(verb: str, noun: str, noun2: str | None = None) -> str:
    """The cleaned label, e.g. ``"pick up the cup"`` (what the VLM query is filled with)."""
    label = f"{verb} the {noun}"
    if verb == "pour" and noun2 is not None:
        label += f" into the {noun2}"
    return label


def place_name(x: float, y: float) -> str:
    """Name the place of a point of the table (normalised frame coordinates)."""
    row = "upper" if y < 0.45 else "lower"
    column = "left" if x < 0.38 else "right" if x > 0.62 else "middle"
    return f"{row} {column}"


_WORD = re.compile(r"[A-Za-z#]+|[^\w\s]")


def tokenize_words(text: str) -> list[str]:
    """Split text into the word and punctuation tokens of the SynthEgo vocabulary."""
    return _WORD.findall(text)


def vocabulary() -> list[str]:
    """Every token that SynthEgo labels, descriptions and the VLM query can contain.

    Returns:
        Sorted, de-duplicated tokens (words keep their case; punctuation is separate).
    """
    texts = [QUERY, "left right", *COLOURS, *PLACES]
    texts += [t for group in TEMPLATES.values() for t in group]
    for verb in VERBS:
        for noun in OBJECT_TYPES:
            for noun2 in RECEIVERS:
                texts += [action_label(verb, noun, noun2), clean_label(verb, noun, noun2)]
    tokens: set[str] = set()
    for text in texts:
        tokens.update(tokenize_words(re.sub(r"\{\w*\}", " ", text)))
    return sorted(tokens)
