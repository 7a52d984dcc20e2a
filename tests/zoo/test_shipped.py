"""The backbones the project ships load offline in stock classes, with the documented shapes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from transformers import AutoProcessor, LlavaForConditionalGeneration

from lego.models.editing.components import load_components

ROOT = Path(__file__).resolve().parents[2] / "pretrained"
SD, VLM = ROOT / "synthego-sd", ROOT / "synthego-vlm"


def test_text_to_image_model_is_a_stock_pipeline_folder():
    pipe = StableDiffusionPipeline.from_pretrained(SD)
    assert pipe.unet.config.in_channels == pipe.unet.config.out_channels == 48
    assert pipe.unet.config.sample_size == 16 and pipe.unet.config.cross_attention_dim == 64
    assert pipe.text_encoder.config.hidden_size == 64
    assert pipe.scheduler.config.prediction_type == "sample"
    assert pipe.scheduler.config.timestep_spacing == "linspace"
    assert sum(p.numel() for p in pipe.unet.parameters()) < 2e6
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red cup at the upper left of the table.", num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert image.shape == (1, 3, 64, 64)
    img2img = StableDiffusionImg2ImgPipeline.from_pretrained(SD)
    img2img.set_progress_bar_config(disable=True)
    edited = img2img("a red cup at the upper left of the table.", image=image, strength=0.3,
                     num_inference_steps=4, output_type="pt").images
    assert edited.shape == (1, 3, 64, 64)
    parts = load_components(SD, "sample")  # what IP2P and LEGO start from: conv_in widened
    assert parts.unet.config.in_channels == 96


def test_vlm_is_a_stock_llava_folder():
    model = LlavaForConditionalGeneration.from_pretrained(VLM)
    processor = AutoProcessor.from_pretrained(VLM)
    assert model.config.image_seq_length == 16
    assert model.config.text_config.hidden_size == 128  # vlm_dim of configs/synthego/lego.yaml
    assert model.config.projector_hidden_act == "linear"
    assert processor.patch_size == 16


def test_each_backbone_has_a_card_with_its_scores():
    for folder in (SD, VLM):
        record = json.loads((folder / "training.json").read_text())
        assert record["scores"] and record["command"].startswith("python -m lego backbones")
        assert "## Scores (held-out scenes)" in (folder / "README.md").read_text()
    assert (SD / "samples.png").is_file()
    assert not list(ROOT.glob("**/*.bin")) and not list(ROOT.glob("**/*.pt"))  # no pickles
