"""Counter-based seeds: a stable seed from a tuple of keys, for draws that must be replayable.

A draw seeded from ``(seed, epoch, sample)`` or ``(seed, step, batch, rank)`` is the same in an
uninterrupted run and in one resumed from a checkpoint, whatever ran before it. Pure Python.
"""

from __future__ import annotations

import hashlib


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from keys (independent of Python's hash randomisation and of the platform).

    Args:
        *keys: Integers and strings naming the draw, e.g. ``(seed, "flip", epoch, index)``.

    Returns:
        A seed for ``torch.Generator.manual_seed``.
    """
    text = "\x00".join(f"{type(key).__name__}:{key}" for key in keys)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
