"""Shared fixtures: offline hub, a small SynthEgo dataset, a tiny SynthEgo diffusion backbone."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from lego.models.editing.bootstrap import write_diffusion_backbone  # noqa: E402
from lego.synthego import generate, vocabulary  # noqa: E402


@pytest.fixture(scope="session")
def synthego_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SynthEgo dataset (32 x 32 px; 24 train, 8 val pairs). Do not modify it."""
    root = tmp_path_factory.mktemp("synthego")
    generate(root, train=24, val=8, size=32, seed=0, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def synthego_backbone(tmp_path_factory) -> Path:
    """SynthEgo-style backbone: pixel-unshuffle autoencoder, text-to-image UNet (48 channels)."""
    root = tmp_path_factory.mktemp("synthego-sd")
    return write_diffusion_backbone(root, vocabulary(), resolution=32, hidden_size=32)
