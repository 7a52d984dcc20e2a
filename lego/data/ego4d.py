"""Ego4D (FHO) in the EgoGen release format."""

from __future__ import annotations

from lego.data.egogen import EgoGenDataModule
from lego.data.narration import clean_ego4d_narration


class Ego4DDataModule(EgoGenDataModule):
    """Ego4D action frames: ``<root>/EgoGen/ego4d.fho`` and ``<root>/ego4d_{train,val}.json``.

    Action labels are narrations (``"#C C picks up the knife"``) cleaned as the paper's code does
    (``"pick up the knife"``); see :func:`lego.data.narration.clean_ego4d_narration`.
    """

    name = "ego4d"
    frames_subdir = "ego4d.fho"

    def clean_action(self, label: str) -> str:
        """Strip the narrator marks and lemmatize the verb."""
        return clean_ego4d_narration(label)
