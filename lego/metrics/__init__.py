"""Metrics of lego: the paper's evaluation suite as torchmetrics Metrics."""

__all__: list[str] = []
