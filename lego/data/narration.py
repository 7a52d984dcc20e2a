"""Ego4D narration cleaning: ``"#C C picks up the knife"`` -> ``"pick up the knife"``.

The paper's code strips the two narrator marks and lemmatizes the first word with WordNet as a
verb. WordNet needs a corpus download, so the verb is lemmatized here by rules that cover the
inflections narrations use (third person ``-s``/``-es``/``-ies``, irregular forms, and the odd
``-ing``/``-ed`` form). Unlike the paper's code, a label that does not start with ``#C C`` is
returned unchanged instead of losing its first four characters.
"""

from __future__ import annotations

import re

_NARRATOR = re.compile(r"^\s*#\s*C\s+C\s+(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)

# Forms WordNet maps to a different stem than the suffix rules below would.
_IRREGULAR = {
    "is": "be",
    "are": "be",
    "was": "be",
    "were": "be",
    "has": "have",
    "had": "have",
    "does": "do",
    "did": "do",
    "done": "do",
    "goes": "go",
    "went": "go",
    "gone": "go",
    "puts": "put",
    "cuts": "cut",
    "sets": "set",
    "lets": "let",
    "hits": "hit",
    "shuts": "shut",
    "took": "take",
    "taken": "take",
    "made": "make",
    "held": "hold",
    "threw": "throw",
    "thrown": "throw",
    "picked": "pick",
    "caught": "catch",
    "brought": "bring",
    "gave": "give",
    "given": "give",
    "saw": "see",
    "seen": "see",
    "ate": "eat",
    "eaten": "eat",
    "fell": "fall",
    "left": "leave",
    "kept": "keep",
    "spread": "spread",
    "dies": "die",
    "ties": "tie",
    "lies": "lie",
    "unties": "untie",
    "uses": "use",
    "used": "use",
    "adding": "add",
    "added": "add",
    "focuses": "focus",
    "aches": "ache",
    "caches": "cache",
    "bias": "bias",
}
# Base forms ending in ``s`` that must not lose it.
_KEEP = ("ss", "us", "is")
# ``-es`` endings whose ``e`` belongs to the suffix: washes -> wash, boxes -> box.
_ES_SUFFIXES = ("sses", "shes", "ches", "xes", "zzes", "oes")
# -ing / -ed stems whose final consonant was doubled (stirring -> stir, dropped -> drop).
_DOUBLED = re.compile(r"([bdgklmnprt])\1$")
_VOWELS = set("aeiou")


def lemmatize_verb(word: str) -> str:
    """Lemmatize an English verb form to its base form (``"picks"`` -> ``"pick"``).

    Args:
        word: One verb, any case.

    Returns:
        The base form in lower case. Words that are already base forms come back unchanged.
    """
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(_ES_SUFFIXES):
        return w[:-2]
    if w.endswith("s") and not w.endswith(_KEEP):
        return w[:-1]
    if w.endswith("ing") and len(w) > 5:
        return _restore_stem(w[:-3])
    if w.endswith("ied") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("ed") and len(w) > 4:
        return _restore_stem(w[:-2])
    return w


def _restore_stem(stem: str) -> str:
    """Undo consonant doubling or a dropped final ``e`` after removing -ing/-ed."""
    if _DOUBLED.search(stem) and not stem.endswith(("ll", "ss")):
        return stem[:-1]
    # place(d)/placing, move(d)/moving: consonant-vowel-consonant endings that took an ``e``.
    if (
        len(stem) >= 3
        and stem[-1] not in _VOWELS
        and stem[-1] not in "wxy"
        and stem[-2] in _VOWELS
        and stem[-3] not in _VOWELS
        and stem[-1] in "cvszk"
    ):
        return stem + "e"
    return stem


def clean_ego4d_narration(label: str) -> str:
    """Clean an Ego4D narration as the paper's code does, without mangling other labels.

    ``"#C C picks up the knife"`` becomes ``"pick up the knife"``: the narrator marks ``#C C``
    are removed and the first word (the verb) is lemmatized. A label without the ``#C C`` prefix
    (e.g. an Epic-Kitchens narration or ``"#O man X opens the door"``) is only stripped of
    surrounding whitespace.

    Args:
        label: The ``action`` field of a record.

    Returns:
        The cleaned action label.
    """
    match = _NARRATOR.match(label)
    if match is None:
        return label.strip()
    rest = match.group("rest").strip()
    if not rest:
        return rest
    verb, _, tail = rest.partition(" ")
    lemma = lemmatize_verb(verb)
    return f"{lemma} {tail.strip()}".strip()
