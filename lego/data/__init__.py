"""Data layer: the EgoGen release format and one DataModule per dataset."""

from lego.data.ego4d import Ego4DDataModule
from lego.data.egogen import (
    DataFormatError,
    EgoGenDataModule,
    EgoGenDataset,
    read_records,
    safe_join,
)
from lego.data.epic_kitchens import EpicKitchensDataModule
from lego.data.narration import clean_ego4d_narration, lemmatize_verb
from lego.data.synthego import SynthEgoDataModule

__all__ = [
    "DataFormatError",
    "Ego4DDataModule",
    "EgoGenDataModule",
    "EgoGenDataset",
    "EpicKitchensDataModule",
    "SynthEgoDataModule",
    "clean_ego4d_narration",
    "lemmatize_verb",
    "read_records",
    "safe_join",
]
