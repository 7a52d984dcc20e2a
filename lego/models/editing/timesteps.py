"""Training timestep distributions for the denoising loss.

The paper draws timesteps uniformly. A logit-normal density (SD3's, computed by
``diffusers.training_utils``) with a positive mean spends more of a short training run at the noisy
end, where the layout of the action frame is decided; it is a research option, off by default.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling
from torch import Tensor

TimestepSampling = Literal["uniform", "logit_normal"]


def check_timestep_sampling(scheme: str, logit_std: float) -> None:
    """Raise ``ValueError`` for an unknown scheme or a non-positive spread."""
    if scheme not in get_args(TimestepSampling):
        raise ValueError(
            f"timestep_sampling must be one of {get_args(TimestepSampling)}, got {scheme!r}"
        )
    if not logit_std > 0:
        raise ValueError(f"timestep_logit_std must be positive, got {logit_std}")


def draw_timesteps(
    scheme: TimestepSampling,
    batch_size: int,
    num_train_timesteps: int,
    device: torch.device | str,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Integer training timesteps in ``[0, num_train_timesteps)``, one per sample.

    Args:
        scheme: ``uniform`` (the paper) or ``logit_normal``: the fraction ``t / T`` is
            ``sigmoid(N(logit_mean, logit_std))``, so a positive mean favours the noisy end.
        batch_size: Number of timesteps.
        num_train_timesteps: Length of the training noise schedule ``T``.
        device: Device of the result.
        logit_mean: Mean of the logit-normal density.
        logit_std: Standard deviation of the logit-normal density.
        generator: Generator of the draw (on its own device; ``None``: the global random state).

    Returns:
        A ``long`` tensor of shape ``(batch_size,)`` on ``device``.
    """
    where = generator.device if generator is not None else device
    if scheme == "uniform":
        drawn = torch.randint(
            0, num_train_timesteps, (batch_size,), device=where, generator=generator
        )
        return drawn.to(device)
    u = compute_density_for_timestep_sampling(
        scheme,
        batch_size,
        logit_mean=logit_mean,
        logit_std=logit_std,
        device=where,
        generator=generator,
    )
    return (u * num_train_timesteps).long().clamp(0, num_train_timesteps - 1).to(device)
