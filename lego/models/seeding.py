"""Counter-based randomness of a training step: a function of (seed, step, batch, rank).

A training step that draws only from :func:`step_randomness` does the same in an uninterrupted
run and in one resumed from a checkpoint (``kill -9`` included), whatever ran before it: noise,
timesteps, classifier-free-guidance dropout and the dropout layers of the networks. Under DDP
each rank draws its own numbers (the rank is a key), as many as in the same run uninterrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lego.data.seeds import derive_seed


@contextmanager
def step_randomness(
    seed: int, step: int, batch_idx: int, rank: int, device: torch.device
) -> Iterator[torch.Generator]:
    """Seed a training step's random draws from its coordinates, then restore the global state.

    Inside the block the global random state (CPU, and the CUDA device's when ``device`` is
    one) is seeded from the keys, so the dropout layers of the networks draw counter-based
    masks; the yielded generator serves the step's explicit draws. Gradient checkpointing
    replays the state it saw in the forward pass, so the backward pass outside the block
    recomputes the same masks.

    Args:
        seed: The module's seed.
        step: The global (optimizer) step.
        batch_idx: The batch's index in the epoch: with the step it names a micro-batch also
            under gradient accumulation.
        rank: The global rank.
        device: Where the step runs.

    Yields:
        A generator on ``device`` for the step's explicit draws.
    """
    keys = (seed, "train", step, batch_idx, rank)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.default_generator.manual_seed(derive_seed(*keys, "modules"))
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(derive_seed(*keys, "modules"))
        yield torch.Generator(device=device).manual_seed(derive_seed(*keys, "draws"))
