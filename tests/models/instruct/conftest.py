"""Fixtures for the VLM tests: a tiny LLaVA written in transformers layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from lego.models.instruct.bootstrap import write_synthego_vlm

TINY = {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "text_hidden": 64, "heads": 4}


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA (16 image tokens, D = 64) over the SynthEgo vocabulary."""
    return write_synthego_vlm(tmp_path_factory.mktemp("vlm") / "tiny-llava", **TINY)
