"""Tiny diffusion backbones (random weights, real layouts) and VLM feature helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lego.models.editing.bootstrap import write_diffusion_backbone
from lego.synthego import vocabulary


@pytest.fixture(scope="session")
def kl_backbone(tmp_path_factory) -> Path:
    """Stable-Diffusion-style backbone: small AutoencoderKL (4 latent channels), 4-channel UNet."""
    root = tmp_path_factory.mktemp("tiny-sd")
    return write_diffusion_backbone(
        root, vocabulary(), resolution=32, hidden_size=32, autoencoder="kl", seed=1
    )
