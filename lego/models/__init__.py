"""Models of lego: the action frame generators and the VLM instruction tuning module."""

from lego.models.editing import ActionFrameGenerator, CopyInputGenerator

__all__ = ["ActionFrameGenerator", "CopyInputGenerator"]
