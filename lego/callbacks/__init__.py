"""Callbacks of lego: prediction writers, image grids and the evaluation suite."""

from lego.callbacks.evaluation import EditMetricsCallback

__all__: list[str] = ["EditMetricsCallback"]
