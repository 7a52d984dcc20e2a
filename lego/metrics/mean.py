"""Base class of the metrics reported as a scaled mean of per-image scores."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


class MeanScore(Metric):
    """Mean of per-image scores times ``scale``; sums and counts are summed across processes.

    Args:
        scale: Multiplier of the mean (100 for the paper's similarities and LPIPS).
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    full_state_update = False

    def __init__(self, scale: float = 100.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = scale
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("total", default=zero, dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def accumulate(self, scores: Tensor) -> None:
        """Add a vector of per-image scores."""
        self.total += scores.detach().double().sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        """Mean score x scale (0 images: NaN)."""
        if int(self.count) == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count * self.scale).float()
