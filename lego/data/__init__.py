"""Data layer: the EgoGen release format and one DataModule per dataset."""

from lego.data.ego4d import Ego4DDataModule
from lego.data.egogen import EgoGenDataModule, EgoGenDataset
from lego.data.epic_kitchens import EpicKitchensDataModule
from lego.data.io import DataFormatError, safe_join
from lego.data.narration import clean_ego4d_narration, lemmatize_verb
from lego.data.records import Record, open_rgb, read_records
from lego.data.synthego import SynthEgoDataModule

__all__ = [
    "DataFormatError",
    "Ego4DDataModule",
    "EgoGenDataModule",
    "EgoGenDataset",
    "EpicKitchensDataModule",
    "Record",
    "SynthEgoDataModule",
    "clean_ego4d_narration",
    "lemmatize_verb",
    "open_rgb",
    "read_records",
    "safe_join",
]
