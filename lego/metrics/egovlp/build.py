"""Build an EgoVLP model sized after its checkpoint and load it (the metrics' entry point)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from transformers import DistilBertConfig

from lego.metrics.egovlp.checkpoint import (
    CheckpointError,
    fix_data_parallel_prefix,
    load_egovlp_weights,
    read_checkpoint,
)
from lego.metrics.egovlp.model import EgoVLP, EgoVLPConfig

#: Attention head width of the published ViT-B/16 and DistilBERT (768 / 12).
HEAD_DIM = 64


def config_from_state_dict(
    state_dict: dict[str, Tensor], num_frames: int, text_dir: Path | None = None
) -> EgoVLPConfig:
    """Read the model sizes off a checkpoint's tensor shapes.

    The published checkpoints give the ViT-B/16 + DistilBERT-base sizes; smaller models with the
    same key names (tests, distilled variants) are sized the same way. Head counts are
    ``width / 64`` unless the DistilBERT directory's config says otherwise.

    Args:
        state_dict: Weights with or without the ``module.`` prefix.
        num_frames: Frames of the video encoder (4 for Ego4D, 16 for Epic-Kitchens).
        text_dir: Optional DistilBERT directory; its config is used for the text encoder.

    Returns:
        The configuration.

    Raises:
        CheckpointError: If a tensor the sizes are read from is missing.
    """
    sd = fix_data_parallel_prefix(state_dict, ["video_model.cls_token"])
    try:
        dim = sd["video_model.cls_token"].shape[-1]
        patch = sd["video_model.patch_embed.proj.weight"].shape[-1]
        tokens = sd["video_model.pos_embed"].shape[1] - 1
        depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("video_model.blocks."))
        hidden = sd["video_model.blocks.0.mlp.fc1.weight"].shape[0]
        proj = sd["vid_proj.0.weight"].shape[0]
        text_dim = sd["text_model.embeddings.word_embeddings.weight"].shape[1]
        vocab = sd["text_model.embeddings.word_embeddings.weight"].shape[0]
        positions = sd["text_model.embeddings.position_embeddings.weight"].shape[0]
        layers = 1 + max(int(k.split(".")[3]) for k in sd
                         if k.startswith("text_model.transformer.layer."))
        text_hidden = sd["text_model.transformer.layer.0.ffn.lin1.weight"].shape[0]
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"not an EgoVLP state dict (cannot read {err})") from err
    side = int(round(tokens**0.5))
    if text_dir is not None:
        text = DistilBertConfig.from_pretrained(str(text_dir))
    else:
        text = DistilBertConfig(vocab_size=vocab, dim=text_dim, n_layers=layers,
                                n_heads=max(1, text_dim // HEAD_DIM), hidden_dim=text_hidden,
                                max_position_embeddings=positions)
    return EgoVLPConfig(
        num_frames=num_frames, image_size=side * patch, patch_size=patch, embed_dim=dim,
        depth=depth, num_heads=max(1, dim // HEAD_DIM), mlp_ratio=hidden / dim,
        projection_dim=proj, text=text,
    )


def build_egovlp(checkpoint: Path, num_frames: int, text_dir: Path | None = None) -> EgoVLP:
    """Build the EgoVLP model for ``checkpoint`` and load it strictly, in eval mode.

    Args:
        checkpoint: ``egovlp.pth`` / ``epic_mir_plus.pth`` (or a compatible file).
        num_frames: 4 (Ego4D, ``egovlp.pth``) or 16 (Epic-Kitchens, ``epic_mir_plus.pth``).
        text_dir: Optional DistilBERT directory (config for the text encoder).

    Returns:
        The frozen model.
    """
    data = read_checkpoint(Path(checkpoint))
    config = config_from_state_dict(data["state_dict"], num_frames, text_dir)
    model = EgoVLP(config)
    load_egovlp_weights(model, Path(checkpoint), data)
    return model.eval().requires_grad_(False)
