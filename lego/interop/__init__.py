"""Interoperability: diffusers pipeline export of trained models."""

from lego.interop.export import build_pipeline, export_pipeline
from lego.interop.pipeline import LegoPipeline

__all__ = ["LegoPipeline", "build_pipeline", "export_pipeline"]
