"""PSNR as the paper reports it: the mean of per-image PSNR over [0, 1] images."""

from __future__ import annotations

from typing import Any

from torchmetrics.image import PeakSignalNoiseRatio


class MeanPSNR(PeakSignalNoiseRatio):
    """Mean over images of ``10 log10(1 / MSE)`` (data range 1), in dB.

    Per-image values are kept as states concatenated across processes, so the distributed mean
    equals the single-process one. This differs from the PSNR of the pooled MSE.

    Args:
        kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).
    """

    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean", **kwargs)
