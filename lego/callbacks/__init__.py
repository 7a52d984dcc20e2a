"""Callbacks of lego: prediction writers, image grids and the evaluation suite."""

__all__: list[str] = []
