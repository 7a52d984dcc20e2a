"""Mutual self-attention (MasaCtrl, Cao et al. 2023) as a diffusers attention processor.

In MasaCtrl's mutual self-attention the target image's self-attention queries read the keys and
values of a *source* branch denoised alongside it in the same batch, so the edit keeps the
source's appearance. Here the batch is laid out as ``[source | target rows ...]``: its first
``MutualAttentionState.source_rows`` rows are the source branch and every following block of as
many rows (e.g. the target's unconditional and conditional halves) reads the source rows' keys and
values, row by row. The source rows themselves attend to their own keys and values as usual.

The processor is installed on the self-attention (``attn1``) modules only, with
``unet.set_attn_processor`` (see :func:`mutual_self_attention`); it is never patched into
``forward``. A :class:`MutualAttentionState` shared by all of them holds the denoising step (set by
the pipeline before each UNet call) and counts the self-attention layers in their order of
execution (down blocks, mid block, up blocks: 16 in Stable Diffusion 1.5, 7 in the miniature
UNets), as MasaCtrl's ``cur_att_layer // 2`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch.nn.functional as F  # noqa: N812
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from torch import Tensor


@dataclass
class MutualAttentionState:
    """State shared by the mutual self-attention processors of one UNet.

    Args:
        start_step: First denoising step (0-based) at which the target reads the source.
        start_layer: First self-attention layer (0-based, order of execution) that does.
        source_rows: Rows ``[0, source_rows)`` of the batch are the source branch; 0 disables the
            processors (they then compute plain self-attention).
        step: The current denoising step (set by the pipeline with :meth:`begin_forward`).
        layer: Self-attention layers run so far in the current UNet forward.
        num_layers: Self-attention layers the processors were installed on.
        active: ``(step, layer)`` of every call in which the target read the source, in order
            (for tests and debugging).
    """

    start_step: int = 4
    start_layer: int = 10
    source_rows: int = 0
    step: int = 0
    layer: int = 0
    num_layers: int = 0
    active: list[tuple[int, int]] = field(default_factory=list)

    def begin_forward(self, step: int) -> None:
        """Mark the start of a UNet forward at denoising step ``step`` (resets the layer count).

        Args:
            step: The denoising step (0-based).
        """
        self.step = step
        self.layer = 0

    def next_layer(self) -> bool:
        """Count one self-attention layer and say whether it mixes in the source.

        Returns:
            True if the layer is at or after ``start_layer``, the step at or after ``start_step``
            and a source branch is set; the ``(step, layer)`` pair is then appended to ``active``.
        """
        layer = self.layer
        self.layer += 1
        on = self.source_rows > 0 and self.step >= self.start_step and layer >= self.start_layer
        if on:
            self.active.append((self.step, layer))
        return on


class MutualSelfAttentionProcessor:
    """Self-attention whose target rows attend to the source rows' keys and values when active.

    Inactive, it computes exactly what diffusers' ``AttnProcessor2_0`` computes. Active (see
    :meth:`MutualAttentionState.next_layer`), row ``source_rows + j`` of the batch uses the keys and
    values of source row ``j % source_rows``; queries are unchanged.

    Args:
        state: The state shared by all processors of the UNet.
    """

    def __init__(self, state: MutualAttentionState) -> None:
        self.state = state

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: object,
    ) -> Tensor:
        """Run the attention of ``attn`` on ``hidden_states``.

        Args:
            attn: The attention module.
            hidden_states: ``B x N x C`` (or ``B x C x H x W``) inputs.
            encoder_hidden_states: Must be None (self-attention); if given, plain attention runs
                and no layer is counted.
            attention_mask: Optional attention mask.
            temb: Time embedding (for spatial norms).
            **kwargs: Ignored (accepted as diffusers' processors do).

        Returns:
            The attention output, shaped like ``hidden_states``.

        Raises:
            ValueError: If the batch is not a multiple of ``state.source_rows`` when active.
        """
        mutual = encoder_hidden_states is None and self.state.next_layer()
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, sequence_length, _ = context.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if mutual:
            key, value = self._share(key), self._share(value)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(
                batch_size, channel, height, width
            )
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _share(self, tensor: Tensor) -> Tensor:
        """Replace the target rows of ``tensor`` (``B x heads x N x d``) by the source rows."""
        rows = self.state.source_rows
        if tensor.shape[0] % rows:
            raise ValueError(
                f"batch of {tensor.shape[0]} rows is not a multiple of the {rows} source rows"
            )
        source = tensor[:rows]
        return source.repeat(tensor.shape[0] // rows, *([1] * (tensor.ndim - 1)))


@contextmanager
def mutual_self_attention(
    unet: UNet2DConditionModel, state: MutualAttentionState
) -> Iterator[MutualAttentionState]:
    """Install mutual self-attention on every ``attn1`` module of ``unet``, then restore.

    Cross-attention (``attn2``) keeps its processor. The UNet's original processors are put back
    when the block exits, also on an exception.

    Args:
        unet: The UNet.
        state: The shared state (``num_layers`` is set to the number of self-attention layers).

    Yields:
        ``state``.

    Raises:
        ValueError: If the UNet has no self-attention (``attn1``) module.
    """
    original = dict(unet.attn_processors)
    names = [name for name in original if name.endswith("attn1.processor")]
    if not names:
        raise ValueError("the UNet has no self-attention (attn1) modules")
    state.num_layers = len(names)
    processor = MutualSelfAttentionProcessor(state)
    unet.set_attn_processor({n: processor if n in names else p for n, p in original.items()})
    try:
        yield state
    finally:
        unet.set_attn_processor(dict(original))
