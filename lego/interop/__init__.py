"""Interoperability: diffusers pipeline export of trained models."""

from lego.interop.export import export_pipeline
from lego.interop.pipeline import LegoPipeline

__all__ = ["LegoPipeline", "export_pipeline"]
