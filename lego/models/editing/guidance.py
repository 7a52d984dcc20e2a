"""Per-sample seeds: one ``torch.Generator`` per sample, seeded from ``(sample_id, seed)``.

A sample's noise (and so its frame) does not depend on the batch it is in or on the number of
devices. Sampling itself is diffusers' pipelines (three-way guidance: the stock
``StableDiffusionInstructPix2PixPipeline``). Pure torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def sample_seed(sample_id: str, seed: int) -> int:
    """A stable 63-bit seed for one sample (independent of Python's hash randomisation).

    Args:
        sample_id: ``"<clip>/<action>"``.
        seed: The run's sampling seed.

    Returns:
        The seed of that sample's generator.
    """
    digest = hashlib.blake2b(f"{seed}\x00{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_generators(
    sample_ids: Sequence[str], seed: int, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One seeded generator per sample (see :func:`sample_seed`).

    Args:
        sample_ids: The samples of the batch.
        seed: The run's sampling seed.
        device: Device of the generators (where the noise is drawn).

    Returns:
        The generators, in batch order.
    """
    return [
        torch.Generator(device=device).manual_seed(sample_seed(sid, seed)) for sid in sample_ids
    ]
