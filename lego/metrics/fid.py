"""FID with the pytorch-fid InceptionV3 (2048-d pool3) loaded from a local weights file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from lego.metrics.inception import FIDInceptionV3


class InceptionFID(FrechetInceptionDistance):
    """Frechet Inception Distance over [0, 1] images of any size (resized to 299 in-network).

    Statistics are accumulated in float64 and summed across processes (torchmetrics).

    Args:
        weights: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release).
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False

    def __init__(self, weights: Path, **kwargs: Any) -> None:
        network = FIDInceptionV3()
        network.load_weights(weights)
        network.requires_grad_(False)
        super().__init__(feature=network, normalize=True, **kwargs)

    def update(self, imgs: Tensor, real: bool) -> None:
        """Add ``B x 3 x H x W`` images in [0, 1] to the real or generated set."""
        self.inception.eval()
        super().update(imgs.float(), real)
