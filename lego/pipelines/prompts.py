"""CLIP text embeddings of prompts, as every Stable Diffusion pipeline conditions on them."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def encode_prompts(
    tokenizer: object, text_encoder: nn.Module, prompts: list[str], device: torch.device
) -> Tensor:
    """The final-layer hidden states ``B x L x D`` of ``prompts``, padded to the tokenizer's length.

    Args:
        tokenizer: A CLIP tokenizer (``model_max_length`` tokens, 77 for Stable Diffusion).
        text_encoder: The CLIP text encoder.
        prompts: The prompts (longer ones are truncated).
        device: Where the token ids go (the text encoder's device).

    Returns:
        The hidden states.
    """
    ids = tokenizer(  # type: ignore[operator]
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,  # type: ignore[attr-defined]
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    return text_encoder(ids)[0]
