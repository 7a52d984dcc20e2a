"""Tiny random-weight metric models in the real layouts (official key names), written to disk."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch
from torchvision import models as tvm
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPConfig,
    CLIPModel,
    DistilBertConfig,
    DistilBertTokenizerFast,
)

from lego.metrics.egovlp.model import EgoVLP, EgoVLPConfig
from lego.metrics.inception import FIDInceptionV3

WORDS = ("a picture of the man woman hand right left picks up cup red blue knife cuts bread "
         "table pushes bowl opens box pours onto into green").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_text_config() -> DistilBertConfig:
    return DistilBertConfig(vocab_size=len(SPECIALS) + len(WORDS), dim=64, n_layers=2, n_heads=1,
                            hidden_dim=128, max_position_embeddings=64)


def tiny_egovlp_config(num_frames: int = 4) -> EgoVLPConfig:
    # head width 64 (as ViT-B/16), so sizes are recoverable from the state dict
    return EgoVLPConfig(num_frames=num_frames, image_size=32, patch_size=16, embed_dim=64,
                        depth=2, num_heads=1, mlp_ratio=2.0, projection_dim=32,
                        text=tiny_text_config())


def install_parse_config() -> type:
    """A module named ``parse_config`` with a ``ConfigParser`` class, as EgoVLP's trainer has."""
    module = types.ModuleType("parse_config")

    class ConfigParser:
        def __init__(self) -> None:
            self.config = {"arch": {"type": "FrozenInTime"}, "n_gpu": 8}
            self.resume = Path("/nonexistent/resume.pth")

    ConfigParser.__module__ = "parse_config"
    ConfigParser.__qualname__ = "ConfigParser"
    module.ConfigParser = ConfigParser
    sys.modules["parse_config"] = module
    return ConfigParser


def write_official_egovlp(path: Path, model: EgoVLP, temporal_rows: int = 16) -> dict:
    """Save ``model`` in the EgoVLP trainer's layout: DDP ``module.`` keys, pickled config."""
    state = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    embed = state["module.video_model.temporal_embed"]
    if temporal_rows != embed.shape[1]:
        rows = torch.randn(1, temporal_rows, embed.shape[2]) * 0.02
        rows[:, : min(temporal_rows, embed.shape[1])] = embed[:, :temporal_rows]
        state["module.video_model.temporal_embed"] = rows
    config_cls = install_parse_config()
    try:
        torch.save({"arch": "DistributedDataParallel", "epoch": 5, "state_dict": state,
                    "optimizer": {"state": {}, "param_groups": []}, "monitor_best": 0.5,
                    "config": config_cls()}, path)
    finally:
        del sys.modules["parse_config"]
    return state


def write_distilbert_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    tiny_text_config().save_pretrained(path)
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    DistilBertTokenizerFast(vocab=vocab).save_pretrained(path)
    return path


def write_clip_dir(path: Path) -> Path:
    config = CLIPConfig(
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 16, "bos_token_id": 1, "eos_token_id": 2,
                     "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    return path


def write_blip_dir(path: Path, seed: int = 0) -> Path:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tokenizer = BertTokenizerFast(vocab=vocab)
    config = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_attention_heads": 2, "num_hidden_layers": 2, "encoder_hidden_size": 32,
                     "max_position_embeddings": 64, "bos_token_id": 2, "sep_token_id": 3,
                     "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 16},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(path)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    processor.save_pretrained(path)
    return path


def random_inception(seed: int = 0) -> FIDInceptionV3:
    """The FID Inception with random weights that give informative (non-vanishing) features."""
    torch.manual_seed(seed)
    net = FIDInceptionV3()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    return net


def write_inception(path: Path, seed: int = 0) -> Path:
    state = {k: v for k, v in random_inception(seed).net.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # as in pytorch-fid's file
    torch.save(state, path)
    return path


def write_lpips_trunk(path: Path, net: str, seed: int = 0) -> Path:
    """A torchvision-format trunk file (``features.*`` keys; the classifier is not needed)."""
    torch.manual_seed(seed)
    builder = {"alex": tvm.alexnet, "vgg": tvm.vgg16, "squeeze": tvm.squeezenet1_1}[net]
    state = {k: v for k, v in builder(weights=None).state_dict().items()
             if k.startswith("features.")}
    torch.save(state, path)
    return path


def write_metric_weights(root: Path, lpips_nets: tuple[str, ...] = ("alex", "squeeze", "vgg"),
                         blip: bool = True) -> Path:
    """A full metric-weights directory in the LEGO-Metrics layout, tiny random models."""
    egovlp_dir = root / "egovlp" / "pretrained"
    egovlp_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    write_official_egovlp(egovlp_dir / "egovlp.pth", EgoVLP(tiny_egovlp_config(4)), 16)
    torch.manual_seed(1)
    write_official_egovlp(egovlp_dir / "epic_mir_plus.pth", EgoVLP(tiny_egovlp_config(16)), 16)
    write_distilbert_dir(egovlp_dir / "distilbert-base-uncased")
    write_clip_dir(root / "clip-vit-large-patch14")
    write_inception(root / "pt_inception-2015-12-05-6726825d.pth")
    files = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
             "squeeze": "squeezenet1_1-b8a52dc0.pth"}
    for net in lpips_nets:
        write_lpips_trunk(root / files[net], net)
    if blip:
        write_blip_dir(root / "blip" / "blip-image-captioning-base", seed=0)
        write_blip_dir(root / "blip" / "blip-image-captioning-large", seed=1)
    (root / "README.json").write_text(json.dumps({"tiny": True}))
    return root
