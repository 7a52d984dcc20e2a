"""Diffusers pipelines of training-free editing baselines (ProxEdit)."""

from lego.pipelines.mutual_attention import MutualAttentionState, MutualSelfAttentionProcessor
from lego.pipelines.proxedit import ProxEditPipeline

__all__ = ["MutualAttentionState", "MutualSelfAttentionProcessor", "ProxEditPipeline"]
