"""SynthEgo, the built-in procedural dataset, read through the EgoGen code path."""

from __future__ import annotations

from lego.data.egogen import EgoGenDataModule
from lego.data.narration import clean_ego4d_narration


class SynthEgoDataModule(EgoGenDataModule):
    """SynthEgo action frames written by ``python -m lego synthego``.

    The generator writes Ego4D-style labels (``"#C C picks up the red cup"``), cleaned as Ego4D's.
    Its records also carry ``oracle_description``: the true detailed description of the action
    (set ``description_key: oracle_description`` to train on it before a VLM exists). Its
    descriptions name "left" and "right", so ``flip_prob`` should stay 0.
    """

    name = "synthego"
    frames_subdir = "synthego"

    def clean_action(self, label: str) -> str:
        """Strip the narrator marks and lemmatize the verb (as for Ego4D)."""
        return clean_ego4d_narration(label)
