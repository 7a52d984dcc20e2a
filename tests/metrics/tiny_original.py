"""Tiny random metric checkpoints in the ORIGINAL formats (Salesforce BLIP .pth, OpenAI CLIP .pt).

Keys and shapes are written from the original code's module names, independently of the
conversion under test: BLIP ``{"model": state_dict}`` with ``visual_encoder.*`` (timm-style ViT)
and ``text_decoder.*`` (BERT LM head with cross-attention); OpenAI CLIP as a TorchScript archive
whose ``state_dict()`` has ``visual.*`` plus text-tower keys, or as a plain state dict.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from lego.metrics.convert import BLIP_BASE_FILE, BLIP_LARGE_FILE, CLIP_FILE, blip_tokenizer
from lego.metrics.egovlp.model import EgoVLP
from tests.metrics.tiny_weights import (
    tiny_egovlp_config,
    write_distilbert_dir,
    write_official_egovlp,
)


def _ln(state: dict[str, Tensor], key: str, width: int, g: torch.Generator) -> None:
    state[f"{key}.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
    state[f"{key}.bias"] = 0.1 * torch.randn(width, generator=g)


def _linear(state: dict[str, Tensor], key: str, out: int, inp: int, g: torch.Generator) -> None:
    state[f"{key}.weight"] = torch.randn(out, inp, generator=g) / inp**0.5
    state[f"{key}.bias"] = 0.1 * torch.randn(out, generator=g)


def blip_state(vocab: int, width: int = 32, layers: int = 2, text_width: int = 32,
               text_layers: int = 2, image_size: int = 32, patch: int = 16,
               positions: int = 40, seed: int = 0) -> dict[str, Tensor]:
    """A BLIP captioner state dict with the Salesforce key names (``blip_decoder``)."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, Tensor] = {}
    v = "visual_encoder"
    s[f"{v}.cls_token"] = 0.5 * torch.randn(1, 1, width, generator=g)
    s[f"{v}.pos_embed"] = 0.5 * torch.randn(1, (image_size // patch) ** 2 + 1, width, generator=g)
    s[f"{v}.patch_embed.proj.weight"] = torch.randn(width, 3, patch, patch, generator=g) / patch
    s[f"{v}.patch_embed.proj.bias"] = 0.1 * torch.randn(width, generator=g)
    for i in range(layers):
        b = f"{v}.blocks.{i}"
        _ln(s, f"{b}.norm1", width, g)
        _linear(s, f"{b}.attn.qkv", 3 * width, width, g)
        _linear(s, f"{b}.attn.proj", width, width, g)
        _ln(s, f"{b}.norm2", width, g)
        _linear(s, f"{b}.mlp.fc1", 4 * width, width, g)
        _linear(s, f"{b}.mlp.fc2", width, 4 * width, g)
    _ln(s, f"{v}.norm", width, g)
    t = "text_decoder.bert"
    s[f"{t}.embeddings.word_embeddings.weight"] = torch.randn(vocab, text_width, generator=g)
    s[f"{t}.embeddings.position_embeddings.weight"] = 0.5 * torch.randn(positions, text_width,
                                                                        generator=g)
    s[f"{t}.embeddings.position_ids"] = torch.arange(positions)[None]
    _ln(s, f"{t}.embeddings.LayerNorm", text_width, g)
    for i in range(text_layers):
        b = f"{t}.encoder.layer.{i}"
        for part, kv_width in (("attention", text_width), ("crossattention", width)):
            _linear(s, f"{b}.{part}.self.query", text_width, text_width, g)
            _linear(s, f"{b}.{part}.self.key", text_width, kv_width, g)
            _linear(s, f"{b}.{part}.self.value", text_width, kv_width, g)
            _linear(s, f"{b}.{part}.output.dense", text_width, text_width, g)
            _ln(s, f"{b}.{part}.output.LayerNorm", text_width, g)
        _linear(s, f"{b}.intermediate.dense", 4 * text_width, text_width, g)
        _linear(s, f"{b}.output.dense", text_width, 4 * text_width, g)
        _ln(s, f"{b}.output.LayerNorm", text_width, g)
    c = "text_decoder.cls.predictions"
    s[f"{c}.bias"] = 0.1 * torch.randn(vocab, generator=g)
    _linear(s, f"{c}.transform.dense", text_width, text_width, g)
    _ln(s, f"{c}.transform.LayerNorm", text_width, g)
    s[f"{c}.decoder.weight"] = s[f"{t}.embeddings.word_embeddings.weight"]  # tied, as saved
    s[f"{c}.decoder.bias"] = s[f"{c}.bias"]
    return s


def write_original_blip(path: Path, vocab: int, seed: int = 0, **geometry: int) -> dict:
    """Save a tiny BLIP captioner as the Salesforce release does: ``{"model": state_dict}``."""
    state = blip_state(vocab, seed=seed, **geometry)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "epoch": 4}, path)
    return state


def clip_state(width: int = 32, layers: int = 2, image_size: int = 32, patch: int = 8,
               embed: int = 16, seed: int = 0) -> dict[str, Tensor]:
    """An OpenAI CLIP ViT state dict (``clip/model.py`` names), text tower included."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, Tensor] = {}
    s["visual.class_embedding"] = 0.5 * torch.randn(width, generator=g)
    s["visual.positional_embedding"] = 0.5 * torch.randn((image_size // patch) ** 2 + 1, width,
                                                         generator=g)
    s["visual.conv1.weight"] = torch.randn(width, 3, patch, patch, generator=g) / patch
    _ln(s, "visual.ln_pre", width, g)
    for i in range(layers):
        b = f"visual.transformer.resblocks.{i}"
        _ln(s, f"{b}.ln_1", width, g)
        s[f"{b}.attn.in_proj_weight"] = torch.randn(3 * width, width, generator=g) / width**0.5
        s[f"{b}.attn.in_proj_bias"] = 0.1 * torch.randn(3 * width, generator=g)
        _linear(s, f"{b}.attn.out_proj", width, width, g)
        _ln(s, f"{b}.ln_2", width, g)
        _linear(s, f"{b}.mlp.c_fc", 4 * width, width, g)
        _linear(s, f"{b}.mlp.c_proj", width, 4 * width, g)
    _ln(s, "visual.ln_post", width, g)
    s["visual.proj"] = torch.randn(width, embed, generator=g) / width**0.5
    # the text tower (not used for image-image similarity) and the archive's scalars
    s["positional_embedding"] = torch.randn(8, 16, generator=g)
    s["text_projection"] = torch.randn(16, embed, generator=g)
    s["logit_scale"] = torch.tensor(4.6052)
    s["token_embedding.weight"] = torch.randn(50, 16, generator=g)
    _ln(s, "ln_final", 16, g)
    _linear(s, "transformer.resblocks.0.mlp.c_fc", 64, 16, g)
    s["input_resolution"] = torch.tensor(image_size)
    s["context_length"] = torch.tensor(8)
    s["vocab_size"] = torch.tensor(50)
    return s


class _Holder(nn.Module):
    """A module tree holding tensors under dotted names (parameters, or buffers for integers)."""

    def __init__(self, state: dict[str, Tensor]) -> None:
        super().__init__()
        for key, tensor in state.items():
            module: nn.Module = self
            *parents, leaf = key.split(".")
            for name in parents:
                if not hasattr(module, name):
                    module.add_module(name, nn.Module())
                module = getattr(module, name)
            if tensor.is_floating_point():
                module.register_parameter(leaf, nn.Parameter(tensor.clone()))
            else:
                module.register_buffer(leaf, tensor.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x


def write_original_clip(path: Path, torchscript: bool = True, half: bool = True,
                        **geometry: int) -> dict[str, Tensor]:
    """Save a tiny OpenAI CLIP: a TorchScript archive (as ``ViT-L-14.pt``) or a plain state dict.

    ``half`` stores float16 weights, as OpenAI's archive does; the returned state is the stored
    values in float32.
    """
    state = clip_state(**geometry)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if torchscript:
        with warnings.catch_warnings():  # OpenAI's format is TorchScript, deprecated or not
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(_Holder(state)).save(str(path))
    else:
        torch.save(state, path)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def write_original_metric_weights(root: Path) -> Path:
    """CLIP and BLIP in their original files, laid out as ``bolinlai/LEGO-Metrics`` (+ EgoVLP).

    Widths are 64 (one head of the released width 64), so the default conversion applies.
    """
    egovlp = root / "metrics" / "egovlp" / "pretrained"
    egovlp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    write_official_egovlp(egovlp / "egovlp.pth", EgoVLP(tiny_egovlp_config(4)), 16)
    vocab = len(blip_tokenizer(write_distilbert_dir(egovlp / "distilbert-base-uncased")))
    blip = root / "metrics" / "blip" / "pretrained"
    write_original_blip(blip / BLIP_BASE_FILE, vocab, seed=0, width=64, text_width=64)
    write_original_blip(blip / BLIP_LARGE_FILE, vocab, seed=1, width=64, text_width=64)
    write_original_clip(root / "metrics" / CLIP_FILE, width=64)
    return root
