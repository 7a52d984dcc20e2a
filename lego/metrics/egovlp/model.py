"""EgoVLP dual encoder: a divided space-time video transformer and a DistilBERT text encoder.

The module and parameter names equal those of the official EgoVLP ``FrozenInTime`` model, so the
released checkpoints (``egovlp.pth``, ``epic_mir_plus.pth``) load with ``strict=True`` once the
``module.`` prefix is removed (see :mod:`lego.metrics.egovlp.checkpoint`). Pure torch and
transformers; no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from transformers import DistilBertConfig, DistilBertModel


@dataclass
class EgoVLPConfig:
    """Sizes of the EgoVLP model (defaults: the published ViT-B/16 + DistilBERT-base model).

    Attributes:
        num_frames: Frames the video encoder accepts (length of ``temporal_embed``): 4 for the
            Ego4D checkpoint ``egovlp.pth``, 16 for the Epic-Kitchens ``epic_mir_plus.pth``.
        image_size: Side of the square input frames.
        patch_size: Side of the square patches.
        embed_dim: Width of the video transformer.
        depth: Number of space-time blocks.
        num_heads: Attention heads per attention layer.
        mlp_ratio: Hidden width of the MLPs relative to ``embed_dim``.
        projection_dim: Size of the joint video-text embedding.
        layer_norm_eps: Epsilon of the video transformer's LayerNorms.
        text: Configuration of the DistilBERT text encoder.
    """

    num_frames: int = 4
    image_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    projection_dim: int = 256
    layer_norm_eps: float = 1e-6
    text: DistilBertConfig = field(default_factory=DistilBertConfig)

    @property
    def num_patches(self) -> int:
        """Patches per frame."""
        return (self.image_size // self.patch_size) ** 2


class DividedAttention(nn.Module):
    """Multi-head self-attention restricted to groups of tokens (one time or one space group).

    The CLS token (position 0) attends to every token; every other token attends to the tokens
    of its own group plus the CLS token.

    Args:
        dim: Token width.
        num_heads: Number of heads.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, frames: int, over_time: bool) -> Tensor:
        """Attend within time groups (``over_time``) or within space groups.

        Args:
            x: ``B x (1 + frames * patches) x D`` tokens, CLS first, frame-major.
            frames: Number of frames in ``x``.
            over_time: Group tokens of the same patch position across frames (else tokens of the
                same frame).

        Returns:
            The attended tokens, same shape as ``x``.
        """
        b, n, d = x.shape
        h = self.num_heads
        patches = (n - 1) // frames
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # B h n c
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # B h 1 c

        def grouped(t: Tensor) -> Tensor:
            t = t[:, :, 1:].reshape(b, h, frames, patches, -1)
            if over_time:  # groups: patch positions, members: frames
                t = t.transpose(2, 3)
            return t  # B h G M c

        qg, kg, vg = grouped(q), grouped(k), grouped(v)
        groups = qg.shape[2]
        cls_k = k[:, :, :1].unsqueeze(2).expand(-1, -1, groups, -1, -1)
        cls_v = v[:, :, :1].unsqueeze(2).expand(-1, -1, groups, -1, -1)
        out = F.scaled_dot_product_attention(
            qg, torch.cat([cls_k, kg], dim=3), torch.cat([cls_v, vg], dim=3)
        )
        if over_time:
            out = out.transpose(2, 3)
        out = out.reshape(b, h, frames * patches, -1)
        out = torch.cat([cls_out, out], dim=2).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Mlp(nn.Module):
    """Two-layer GELU MLP (``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP."""
        return self.fc2(self.act(self.fc1(x)))


class SpaceTimeBlock(nn.Module):
    """One divided space-time block in the "frozen-in-time" style.

    ``x <- x + attn(norm1(x + timeattn(norm3(x))))`` then ``x <- x + mlp(norm2(x))``: the time
    attention reaches the residual stream only through the input of the space attention.
    Attribute order fixes the state-dict order: norm1, attn, timeattn, norm2, mlp, norm3.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = DividedAttention(dim, num_heads)
        self.timeattn = DividedAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm3 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        """Apply the block to ``B x (1 + F * P) x D`` tokens."""
        time_residual = x + self.timeattn(self.norm3(x), frames, over_time=True)
        x = x + self.attn(self.norm1(time_residual), frames, over_time=False)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Per-frame non-overlapping patch embedding (``proj``: a strided Conv2d)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, video: Tensor) -> Tensor:
        """Embed ``B x F x 3 x H x W`` frames as ``B x (F * P) x D`` tokens, frame-major."""
        b, f = video.shape[:2]
        x = self.proj(video.flatten(0, 1))  # (B F) D h w
        return x.flatten(2).transpose(1, 2).reshape(b, -1, x.shape[1])


class SpaceTimeTransformer(nn.Module):
    """The EgoVLP video encoder: ViT with divided space-time attention; returns the CLS token.

    Args:
        config: Model sizes.
    """

    def __init__(self, config: EgoVLPConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, d))
        self.temporal_embed = nn.Parameter(torch.zeros(1, config.num_frames, d))
        self.patch_embed = PatchEmbed(config.patch_size, d)
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(d, config.num_heads, config.mlp_ratio, config.layer_norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        if not self.cls_token.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, video: Tensor) -> Tensor:
        """Encode ``B x F x 3 x S x S`` clips (``F <= num_frames``) into ``B x D`` features.

        Raises:
            ValueError: If the clip has more frames than the model or the wrong frame size.
        """
        b, f, _, hgt, wid = video.shape
        if f > self.config.num_frames:
            raise ValueError(f"clip has {f} frames, the model accepts at most "
                             f"{self.config.num_frames}")
        if hgt != self.config.image_size or wid != self.config.image_size:
            raise ValueError(f"frames must be {self.config.image_size} px square, got {hgt}x{wid}")
        x = self.patch_embed(video)
        patches = x.shape[1] // f
        pos = self.pos_embed[:, 1:].repeat(1, f, 1)
        time = self.temporal_embed[:, :f].repeat_interleave(patches, dim=1)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x + pos + time], dim=1)
        for block in self.blocks:
            x = block(x, f)
        return self.norm(x)[:, 0]


class EgoVLP(nn.Module):
    """The EgoVLP (Frozen-in-Time) dual encoder with "minimal" 256-d projections.

    Attribute order fixes the state-dict order: text_model, video_model, txt_proj, vid_proj.

    Args:
        config: Model sizes.
    """

    def __init__(self, config: EgoVLPConfig | None = None) -> None:
        super().__init__()
        config = config or EgoVLPConfig()
        self.config = config
        self.text_model = DistilBertModel(config.text)
        self.video_model = SpaceTimeTransformer(config)
        self.txt_proj = nn.Sequential(
            nn.ReLU(), nn.Linear(config.text.dim, config.projection_dim)
        )
        self.vid_proj = nn.Sequential(nn.Linear(config.embed_dim, config.projection_dim))

    def compute_video(self, video: Tensor) -> Tensor:
        """Embed ``B x F x 3 x S x S`` normalised clips as ``B x projection_dim`` (not unit)."""
        return self.vid_proj(self.video_model(video))

    def compute_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Embed tokenised text (DistilBERT [CLS] -> ReLU -> Linear) into ``B x projection_dim``."""
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.txt_proj(hidden.last_hidden_state[:, 0, :])


def text_config_from_dir(path: Path | None) -> DistilBertConfig:
    """Read a DistilBERT config from a local model directory (defaults when ``path`` is None).

    Args:
        path: A directory holding ``config.json`` (e.g. ``distilbert-base-uncased``), or None.

    Returns:
        The configuration.
    """
    if path is None:
        return DistilBertConfig()
    return DistilBertConfig.from_pretrained(str(path))
