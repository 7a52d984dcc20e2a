"""LEGO: egocentric action frame generation with PyTorch Lightning."""

__version__ = "0.1.0"
