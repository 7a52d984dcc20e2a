"""VLM conditioning of LEGO: projections, the text mixer, context assembly and CFG dropout.

The VLM image embedding (``N_img x D``) and text embedding (``77 x D``) are projected to the UNet's
cross-attention width ``C``; the text tokens then pass a 2-layer pre-norm Transformer encoder. The
cross-attention context is ``[CLIP text (77); image tokens (N_img); mixed text tokens (77)]`` along
the sequence (``410 x 768`` for SD 1.5 with 13B LLaVA features). Pure torch / diffusers.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn


class VLMConditioner(ModelMixin, ConfigMixin):
    """Turns VLM embeddings into cross-attention tokens.

    The ``projection_img``, ``projection_txt`` and ``self_attn_mix`` modules of the paper's code.

    Args:
        vlm_dim: Width ``D`` of the VLM embeddings (5120 for LLaVA-LLaMA-2-13B).
        cross_attention_dim: Width ``C`` of the UNet's cross-attention (768 for SD 1.5).
        num_layers: Layers of the text mixer.
        num_heads: Attention heads of the text mixer.
        dim_feedforward: Feed-forward width of each mixer layer.
        dropout: Dropout inside the mixer (active in training, as in the paper's code).
        use_text_mask: Pass the text padding mask to the mixer as a key-padding mask. The paper's
            code does not (the zero-padded rows take part in attention); off by default.

    Raises:
        ValueError: If ``cross_attention_dim`` is not divisible by ``num_heads``.
    """

    @register_to_config
    def __init__(
        self,
        vlm_dim: int,
        cross_attention_dim: int,
        num_layers: int = 2,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        use_text_mask: bool = False,
    ) -> None:
        super().__init__()
        if cross_attention_dim % num_heads:
            raise ValueError(
                f"cross_attention_dim {cross_attention_dim} is not divisible by "
                f"num_heads {num_heads}"
            )
        self.projection_img = nn.Linear(vlm_dim, cross_attention_dim)
        self.projection_txt = nn.Linear(vlm_dim, cross_attention_dim)
        layer = nn.TransformerEncoderLayer(
            d_model=cross_attention_dim,
            nhead=num_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        # TransformerEncoder deep-copies the layer: both layers start identical, as in the paper.
        self.self_attn_mix = nn.TransformerEncoder(
            layer, num_layers=num_layers, enable_nested_tensor=False
        )

    def forward(
        self, vlm_image: Tensor, vlm_text: Tensor, vlm_text_mask: Tensor | None = None
    ) -> Tensor:
        """Project and mix VLM embeddings into cross-attention tokens.

        Args:
            vlm_image: ``B x N_img x D`` image embedding.
            vlm_text: ``B x T x D`` text embedding (T = 77, zero-padded).
            vlm_text_mask: ``B x T`` boolean, True on valid rows (used if ``use_text_mask``).

        Returns:
            ``B x (N_img + T) x C``: image tokens then mixed text tokens.
        """
        image_tokens = self.projection_img(vlm_image)
        text_tokens = self.projection_txt(vlm_text)
        padding = None
        if self.config.use_text_mask and vlm_text_mask is not None:
            padding = ~vlm_text_mask.bool()
            # A sample with no valid row would attend to nothing (NaN); let it see every row.
            padding = padding & ~padding.all(dim=1, keepdim=True)
        text_tokens = self.self_attn_mix(text_tokens, src_key_padding_mask=padding)
        return torch.cat([image_tokens, text_tokens], dim=1)


def assemble_context(clip_text: Tensor, vlm_tokens: Tensor | None) -> Tensor:
    """Concatenate the CLIP text embedding and the VLM tokens along the sequence.

    Args:
        clip_text: ``B x 77 x C`` CLIP text embedding.
        vlm_tokens: ``B x N x C`` VLM tokens, or ``None`` (InstructPix2Pix).

    Returns:
        ``B x (77 + N) x C`` cross-attention context.
    """
    if vlm_tokens is None:
        return clip_text
    return torch.cat([clip_text, vlm_tokens.to(clip_text.dtype)], dim=1)


def conditioning_dropout_masks(
    batch_size: int,
    probability: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw the classifier-free-guidance dropout of InstructPix2Pix / LEGO (one ``r`` per sample).

    With ``p = probability`` and ``r ~ U(0, 1)``: the prompt (CLIP text *and* VLM tokens) is
    dropped when ``r < 2p``, the input image latent when ``p <= r < 3p``. For ``p = 0.05``:
    5% text only, 5% both, 5% image only, 85% nothing.

    Args:
        batch_size: Number of samples.
        probability: ``p``.
        device: Device of the masks.
        generator: Optional random generator.

    Returns:
        ``(drop_prompt, drop_image)`` boolean tensors of shape ``B``.
    """
    r = torch.rand(batch_size, device=device, generator=generator)
    drop_prompt = r < 2 * probability
    drop_image = (r >= probability) & (r < 3 * probability)
    return drop_prompt, drop_image
