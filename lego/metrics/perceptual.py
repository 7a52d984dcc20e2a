"""LPIPS perceptual distance (AlexNet, VGG16 or SqueezeNet trunk) through the ``lpips`` package."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

import lpips
import torch
from torch import Tensor

from lego.metrics.mean import MeanScore

LPIPSNet = Literal["alex", "vgg", "squeeze"]


def load_lpips_trunk(model: lpips.LPIPS, path: Path) -> None:
    """Load torchvision-format ImageNet weights (``features.*``) into an LPIPS trunk.

    ``lpips`` splits the torchvision ``features`` module into slices that keep the original
    module indices (``slice2.3.weight`` is ``features.3.weight``), so the mapping is by name.

    Args:
        model: An ``lpips.LPIPS`` model.
        path: A torchvision checkpoint (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``,
            ``squeezenet1_1-b8a52dc0.pth``).

    Raises:
        FileNotFoundError: If the file is missing.
        KeyError: If it lacks a weight the trunk needs, or a shape differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LPIPS trunk weights not found")
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.net.state_dict()
    mapped = {}
    for key, value in target.items():
        name = "features." + re.sub(r"^slice\d+\.", "", key)
        if name not in source:
            raise KeyError(f"{path}: trunk weight {name!r} (for {key}) is missing")
        if source[name].shape != value.shape:
            raise KeyError(f"{path}: {name} has shape {tuple(source[name].shape)}, "
                           f"expected {tuple(value.shape)}")
        mapped[key] = source[name]
    model.net.load_state_dict(mapped, strict=True)


class LPIPSDistance(MeanScore):
    """Mean LPIPS distance between generated and ground-truth frames, x ``scale``.

    Args:
        trunk_weights: torchvision-format weights of the trunk (the linear heads ship with
            ``lpips``).
        net: ``alex``, ``vgg`` or ``squeeze``.
        input_range: ``signed``: frames in [0, 1] are mapped to [-1, 1] as LPIPS expects;
            ``unit``: they are fed in [0, 1] unchanged (the official pipeline's bug).
        scale: Multiplier of the result (100: the paper's tables).
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False

    def __init__(
        self,
        trunk_weights: Path,
        net: LPIPSNet = "alex",
        input_range: Literal["signed", "unit"] = "signed",
        scale: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(scale=scale, **kwargs)
        self.input_range = input_range
        self.net_name = net
        # pnet_rand avoids any download; the trunk is then loaded from the local file.
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained`
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        load_lpips_trunk(self.lpips, trunk_weights)
        self.lpips.eval().requires_grad_(False)

    def distances(self, preds: Tensor, target: Tensor) -> Tensor:
        """Per-image LPIPS (unscaled) of ``B x 3 x H x W`` frames in [0, 1]."""
        if self.input_range == "signed":
            preds, target = preds * 2.0 - 1.0, target * 2.0 - 1.0
        with torch.no_grad():
            return self.lpips(preds.float(), target.float(), normalize=False).flatten()

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add ``B x 3 x H x W`` generated and ground-truth frames in [0, 1]."""
        d = self.distances(preds, target)
        self.accumulate(d)

