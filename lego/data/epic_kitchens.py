"""Epic-Kitchens in the EgoGen release format."""

from __future__ import annotations

from lego.data.egogen import EgoGenDataModule


class EpicKitchensDataModule(EgoGenDataModule):
    """Epic-Kitchens action frames: ``<root>/EgoGen/epickitchen`` and ``epickitchen_*.json``.

    Action labels (verb-noun narrations) are used verbatim, as in the paper's code.
    """

    name = "epickitchen"
    frames_subdir = "epickitchen"
