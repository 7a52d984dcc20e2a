"""Visual instruction tuning of a LLaVA model and the describe stage (descriptions + features)."""

from lego.models.instruct.module import VisualInstructionTuning

__all__ = ["VisualInstructionTuning"]
