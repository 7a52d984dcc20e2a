"""Callbacks of lego: prediction writers, image grids and the evaluation suite."""

from lego.callbacks.description_metrics import DescriptionMetricsCallback
from lego.callbacks.description_writer import DescriptionWriter
from lego.callbacks.evaluation import EditMetricsCallback
from lego.callbacks.image_grid import ImageGridCallback
from lego.callbacks.progress import ProgressLogger, StepProgressBar
from lego.callbacks.writers import FramesWriter

__all__: list[str] = [
    "DescriptionMetricsCallback",
    "DescriptionWriter",
    "EditMetricsCallback",
    "FramesWriter",
    "ImageGridCallback",
    "ProgressLogger",
    "StepProgressBar",
]
