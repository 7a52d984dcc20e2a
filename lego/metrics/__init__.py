"""Metrics of lego: the paper's evaluation suite as torchmetrics Metrics."""

from lego.metrics.blip import BLIPCaptionSimilarity
from lego.metrics.clip_similarity import CLIPImageSimilarity
from lego.metrics.description_accuracy import DescriptionAccuracy
from lego.metrics.egovlp import EgoVLPSimilarity
from lego.metrics.fid import InceptionFID
from lego.metrics.perceptual import LPIPSDistance
from lego.metrics.psnr import MeanPSNR
from lego.metrics.suite import EditMetricSuite
from lego.metrics.synthego_score import SynthEgoActionScore

__all__: list[str] = [
    "BLIPCaptionSimilarity",
    "CLIPImageSimilarity",
    "DescriptionAccuracy",
    "EditMetricSuite",
    "EgoVLPSimilarity",
    "InceptionFID",
    "LPIPSDistance",
    "MeanPSNR",
    "SynthEgoActionScore",
]
