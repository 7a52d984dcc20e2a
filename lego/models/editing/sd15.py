"""Stable Diffusion 1.5's architecture, for random-weight models at the paper's real shapes.

The configs of the UNet, the autoencoder and the CLIP ViT-L/14 text encoder that LEGO starts
from (``lego.hub.STABLE_DIFFUSION_15``). Shape checks (the real-size config on the meta
device) and GPU benchmarks build models from them without downloading the weights.
"""

from __future__ import annotations

from typing import Any

#: ``UNet2DConditionModel`` of SD 1.5 (4 input channels before the IP2P widening to 8).
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}

#: ``AutoencoderKL`` of SD 1.5 (factor 8, 4 latent channels, scaling 0.18215).
SD15_VAE: dict[str, Any] = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

#: ``CLIPTextConfig`` arguments of CLIP ViT-L/14's text tower (vocabulary left to the tokenizer).
SD15_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
}
